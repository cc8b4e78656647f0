package progress

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNilProgressDoesNothing(t *testing.T) {
	var p *Progress
	p.SetPhase("replay")
	p.AddBytes(10)
	p.AddBytesTotal(10)
	p.SetRevisionsTotal(5)
	p.AddRevisions(5, 105)
	p.Reset("copy")
	assert.Equal(t, Counts{}, p.Load())
}

func TestCounts(t *testing.T) {
	p := New("fetch")
	p.AddBytesTotal(100)
	p.AddBytesTotal(50)
	p.AddBytes(60)
	p.SetRevisionsTotal(1000)
	p.SetPhase("replay")
	p.AddRevisions(256, 356)
	p.AddRevisions(44, 400)
	assert.Equal(t, Counts{Phase: "replay", Bytes: 60, BytesTotal: 150, Revisions: 300, RevisionsTotal: 1000, Revision: 400}, p.Load())
	p.Reset("fetch")
	assert.Equal(t, Counts{Phase: "fetch"}, p.Load())
}

func TestMeasure(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name      string
		prev, cur Sample
		want      Figures
	}{
		{"bytes toward a total", Sample{At: at(0)}, Sample{Counts{Bytes: 100, BytesTotal: 1000}, at(2)},
			Figures{BytesPerSecond: 50, Left: 18 * time.Second, LeftKnown: true}},
		{"revisions decide once they move", Sample{Counts{Bytes: 1000, BytesTotal: 1000}, at(0)},
			Sample{Counts{Bytes: 1000, BytesTotal: 1000, Revisions: 500, RevisionsTotal: 1500}, at(5)},
			Figures{RevisionsPerSecond: 100, Left: 10 * time.Second, LeftKnown: true}},
		{"no total", Sample{At: at(0)}, Sample{Counts{Bytes: 100}, at(1)}, Figures{BytesPerSecond: 100}},
		{"stalled", Sample{Counts{Bytes: 100, BytesTotal: 200}, at(0)}, Sample{Counts{Bytes: 100, BytesTotal: 200}, at(5)}, Figures{}},
		{"done", Sample{Counts{Revisions: 10, RevisionsTotal: 10}, at(0)}, Sample{Counts{Revisions: 10, RevisionsTotal: 10}, at(5)},
			Figures{LeftKnown: true}},
		{"same instant", Sample{At: at(3)}, Sample{Counts{Bytes: 5, BytesTotal: 10}, at(3)}, Figures{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, Measure(tc.prev, tc.cur))
		})
	}
}

func TestLoggerLinesPerTick(t *testing.T) {
	var buf bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p := New("fetch")
	p.AddBytesTotal(1000)
	p.SetRevisionsTotal(200)
	l := NewLogger(p, lg, t0)

	ticks := make(chan time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(context.Background(), ticks)
	}()
	p.AddBytes(500)
	ticks <- t0.Add(5 * time.Second)
	p.AddBytes(500)
	p.SetPhase("replay")
	p.AddRevisions(100, 150)
	ticks <- t0.Add(10 * time.Second)
	close(ticks)
	<-done
	p.AddRevisions(100, 250)
	l.Report(t0.Add(12 * time.Second))

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	assert.Equal(t, "level=INFO msg=progress phase=fetch bytes=500 bytes_total=1000 revisions=0 revisions_total=200 revision=0 revisions_per_second=0 bytes_per_second=100 eta=5s", lines[0])
	assert.Equal(t, "level=INFO msg=progress phase=replay bytes=1000 bytes_total=1000 revisions=100 revisions_total=200 revision=150 revisions_per_second=20 bytes_per_second=100 eta=5s", lines[1])
	assert.Equal(t, "level=INFO msg=progress phase=replay bytes=1000 bytes_total=1000 revisions=200 revisions_total=200 revision=250 revisions_per_second=50 bytes_per_second=0 eta=0s", lines[2])
}

func TestLoggerStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l := NewLogger(New("copy"), slog.New(slog.DiscardHandler), time.Now())
	l.Run(ctx, make(chan time.Time)) // returns: the context ended
}

// BenchmarkUpdates is the cost of the updates the replay makes once per batch of revisions
// and the store's reader once per read, watched (a Progress) and not (nil).
func BenchmarkUpdates(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    *Progress
	}{{"nil", nil}, {"watched", New("replay")}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := int64(0); b.Loop(); i++ {
				tc.p.AddRevisions(256, i)
				tc.p.AddBytes(32 << 10)
			}
		})
	}
}
