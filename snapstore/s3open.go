package snapstore

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/logging"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

// openS3 opens an s3:// bucket URL the way gocloud's s3blob URL opener does
// (the same query parameters: those of gocloud.dev/aws.V2ConfigFromURLParams,
// plus ssetype, kmskeyid, accelerate, use_path_style, s3ForcePathStyle and
// disable_https; credentials from the AWS SDK's default chain), with two
// differences that the URL opener offers no way to make:
//
//   - the SDK logs through log instead of printing to stderr, and does not
//     warn on every read of a multipart object that its composite checksum
//     is not validated (etcdbr verifies every object's SHA-256 itself);
//   - the bucket's client (reads, listings, deletes, small records) gives up on a
//     connection that sends no byte for s3ReadTimeout, and retries: the SDK sets no
//     read timeout for S3, so a stalled connection hung a read, a listing or a delete
//     (and the restore, verify or gc waiting on it) for as long as the stall lasted;
//   - it also returns a second client, for uploads, which waits at most s3ReadTimeout
//     for the answer to a request sent in full (without it, an upload whose answer never
//     came waited forever), gives up a connection whose write cannot send a byte for
//     sendTimeout (a server that stops reading a request held it forever), and whose
//     retryer makes
//     sdkAttempts tries (gocloud's makes 3), so that a part of a streaming
//     upload, which cannot start over, rides out a minute of trouble. The
//     bucket's own client keeps 3 tries: reads are resumed by
//     resumingReader, and callers of List retry. AWS_MAX_ATTEMPTS or
//     max_attempts in the AWS config, when set, win over both.
func openS3(ctx context.Context, raw string, log *slog.Logger, sendTimeout time.Duration) (*blob.Bucket, *s3.Client, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, err
	}
	q := u.Query()
	var opts s3blob.Options
	clientOpts := []func(*s3.Options){func(o *s3.Options) {
		o.Logger = slogLogger{log}
		o.DisableLogOutputChecksumValidationSkipped = true
	}}
	take := func(key string) (string, bool) {
		v := q.Get(key)
		q.Del(key)
		return v, v != ""
	}
	boolParam := func(key string, set func(o *s3.Options, v bool)) error {
		v, ok := take(key)
		if !ok {
			return nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid value for %q: %w", key, err)
		}
		clientOpts = append(clientOpts, func(o *s3.Options) { set(o, b) })
		return nil
	}
	if v, ok := take("ssetype"); ok {
		if opts.EncryptionType, err = sseType(v); err != nil {
			return nil, nil, err
		}
	}
	opts.KMSEncryptionID, _ = take("kmskeyid")
	for key, set := range map[string]func(*s3.Options, bool){
		"accelerate":       func(o *s3.Options, v bool) { o.UseAccelerate = v },
		"disable_https":    func(o *s3.Options, v bool) { o.EndpointOptions.DisableHTTPS = v },
		"use_path_style":   func(o *s3.Options, v bool) { o.UsePathStyle = v },
		"s3ForcePathStyle": func(o *s3.Options, v bool) { o.UsePathStyle = v },
	} {
		if err := boolParam(key, set); err != nil {
			return nil, nil, err
		}
	}
	profile := q.Get("profile")
	cfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	if cfg.RetryMaxAttempts == 0 {
		cfg.RetryMaxAttempts = configuredMaxAttempts(ctx, profile)
	}
	opts.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	var uploadHTTP s3.HTTPClient // the client's HTTP client before the read timeout
	clientOpts = append(clientOpts, func(o *s3.Options) {
		uploadHTTP = o.HTTPClient
		if b, ok := o.HTTPClient.(*awshttp.BuildableClient); ok {
			if _, set := b.GetReadTimeout(); !set {
				o.HTTPClient = b.WithReadTimeout(s3ReadTimeout)
			}
		}
	})
	client := s3.NewFromConfig(cfg, clientOpts...)
	bucket, err := s3blob.OpenBucket(ctx, client, u.Host, &opts)
	if err != nil {
		return nil, nil, err
	}
	if b, ok := uploadHTTP.(*awshttp.BuildableClient); ok {
		// No read timeout: the connection reads nothing while it sends a part, which may
		// take longer on a slow link. But once a request is sent in full, its answer's
		// headers must come within s3ReadTimeout (and the part is sent again).
		uploadHTTP = b.WithTransportOptions(func(tr *http.Transport) {
			if tr.ResponseHeaderTimeout == 0 {
				tr.ResponseHeaderTimeout = s3ReadTimeout
			}
			// Nor does the SDK bound the sending: a store or a middlebox that stops reading
			// the request (a zero TCP window, which TCP never times out) held the upload,
			// and every backup after it, forever.
			dial := tr.DialContext
			if dial == nil {
				dial = (&net.Dialer{}).DialContext
			}
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &sendDeadlineConn{Conn: c, timeout: sendTimeout}, nil
			}
		})
	}
	uploads := s3.New(client.Options(), func(o *s3.Options) {
		o.HTTPClient = uploadHTTP
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = sdkAttempts
			so.MaxBackoff = sdkMaxBackoff
			so.RateLimiter = ratelimit.None
		})
	})
	return bucket, uploads, nil
}

// configuredMaxAttempts returns the number of tries AWS_MAX_ATTEMPTS or max_attempts in the
// AWS config (of profile, "" for the default) sets, 0 when neither does. gocloud gives the
// SDK a retryer of its own, and the SDK then reads neither: without this, both were
// ignored.
func configuredMaxAttempts(ctx context.Context, profile string) int {
	var opts []func(*config.LoadOptions) error
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return 0 // gocloud loaded the same configuration without an error: not expected
	}
	return cfg.RetryMaxAttempts
}

// s3ReadTimeout is how long the bucket's client waits for a byte of an answer before it
// gives up on the connection (and retries, or resumes a read): S3 answers in well under a
// second, and sends the body of an object without pauses.
const s3ReadTimeout = time.Minute

// s3SendTimeout is how long an upload's connection may go without handing a byte to the
// network before the upload gives it up (Options.SendTimeout): a part of 8 MiB goes out in
// writes of a few KiB, each of which a link of a few hundred bytes a second sends within it.
const s3SendTimeout = time.Minute

// sendDeadlineConn is a connection whose every write must finish within timeout: a write
// blocks only while the peer's window is full, and a peer that stops reading keeps it full
// for as long as it likes (TCP gives up only on a peer that stops answering).
type sendDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *sendDeadlineConn) Write(p []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func sseType(v string) (types.ServerSideEncryption, error) {
	for _, t := range types.ServerSideEncryptionAes256.Values() {
		if strings.EqualFold(string(t), v) {
			return t, nil
		}
	}
	return "", fmt.Errorf("%q is not a valid value for %q", v, "ssetype")
}

// slogLogger sends the AWS SDK's log lines to slog: warnings as warnings,
// the rest (debug output, only when the SDK's log mode asks for it) as debug.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "aws sdk: "+fmt.Sprintf(format, v...))
}
