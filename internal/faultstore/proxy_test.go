package faultstore

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProxyFaults sends requests through the proxy to a plain HTTP server and checks what
// each fault does to them, and the request log.
func TestProxyFaults(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	var puts int
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			_, _ = io.Copy(io.Discard, r.Body)
			puts++
			return
		}
		w.Header().Set("Content-Length", "10000")
		_, _ = w.Write(body)
	}))
	defer upstream.Close()
	p, err := Start(upstream.URL, nil)
	require.NoError(t, err)
	defer p.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(key string) (int, []byte, error) {
		resp, err := client.Get(p.URL() + "/bucket/" + key)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	p.Set(Rule{Ops: []Op{OpGet}, Key: "full/", Skip: 1, Times: 2, Fault: Fault{Kind: SlowDown}})
	for i, want := range []int{200, 503, 503, 200} {
		status, _, err := get("pre/full/a")
		require.NoError(t, err)
		require.Equal(t, want, status, "request %d", i)
	}
	status, b, err := get("pre/delta/a") // not picked
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.Equal(t, body, b)

	p.Set(Rule{Fault: Fault{Kind: Corrupt, After: 5}})
	_, b, err = get("x")
	require.NoError(t, err)
	require.Len(t, b, len(body))
	require.Equal(t, body[5]^0xff, b[5])
	require.Equal(t, body[6:], b[6:])

	for _, kind := range []Kind{Truncate, ResetResponse} {
		p.Set(Rule{Fault: Fault{Kind: kind, After: 100}})
		_, b, err = get("x")
		require.Error(t, err, kind)
		require.Len(t, b, 100, kind)
	}

	p.Set(Rule{Fault: Fault{Kind: Stall, After: 10, Delay: 200 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/bucket/x", nil)
	resp, err := client.Do(req)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	p.Set(Rule{Ops: []Op{OpPut}, Fault: Fault{Kind: ResetRequest, After: 10}})
	req, _ = http.NewRequest(http.MethodPut, p.URL()+"/bucket/y", strings.NewReader(string(body)))
	_, err = client.Do(req)
	require.Error(t, err)

	p.Set(Rule{Fault: Fault{Kind: TooSkewed, Skew: time.Hour}})
	resp, err = client.Get(p.URL() + "/bucket/x")
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, string(b), "RequestTimeTooSkewed")
	date, err := http.ParseTime(resp.Header.Get("Date"))
	require.NoError(t, err)
	require.Greater(t, time.Until(date), 50*time.Minute)

	p.Clear()
	status, _, err = get("")
	require.NoError(t, err)
	require.Equal(t, 200, status)
	// The stalled and reset requests are recorded when the proxy is done with them, which can
	// be after their clients gave up: wait for all 12.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Wait(ctx, func(r []Request) bool { return len(r) == 12 }))
	reqs := p.Requests()
	last := reqs[len(reqs)-1]
	require.Equal(t, OpList, last.Op)
	require.Equal(t, Kind(""), last.Fault)
	faulted := 0
	for _, r := range reqs {
		if r.Fault != "" {
			faulted++
		}
	}
	require.Equal(t, 8, faulted)
}
