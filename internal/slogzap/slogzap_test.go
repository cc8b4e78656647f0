package slogzap

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// jsonLogger returns a zap logger writing through NewCore to a slog JSON handler that lets
// every level through, and the buffer it writes to.
func jsonLogger(level zapcore.Level, opts ...zap.Option) (*zap.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: ReplaceLevelNames})
	return zap.New(NewCore(h, level), opts...), &buf
}

func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.Lines(buf.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "line %q", l)
		out = append(out, m)
	}
	return out
}

func TestFieldsAndEntry(t *testing.T) {
	lg, buf := jsonLogger(zapcore.InfoLevel, zap.AddCaller())
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lg.Named("raft").With(zap.String("member", "m1")).Warn("hello",
		zap.String("s", "v"), zap.Int("i", -3), zap.Uint32("u", 7), zap.Bool("b", true),
		zap.Float64("f", 1.5), zap.Duration("d", 1500*time.Millisecond), zap.Time("t", ts),
		zap.Error(errors.New("boom")), zap.Strings("urls", []string{"a", "b"}),
		zap.Stringer("str", time.Second), zap.Any("obj", map[string]int{"x": 1}),
		zap.Error(nil), zap.Skip())

	got := lines(t, buf)
	require.Len(t, got, 1)
	m := got[0]
	assert.Equal(t, "WARN", m["level"])
	assert.Equal(t, "hello", m["msg"])
	assert.Equal(t, "raft", m[LoggerKey])
	assert.Contains(t, m[CallerKey], "slogzap/slogzap_test.go:")
	assert.Equal(t, "m1", m["member"])
	assert.Equal(t, "v", m["s"])
	assert.Equal(t, -3.0, m["i"])
	assert.Equal(t, 7.0, m["u"])
	assert.Equal(t, true, m["b"])
	assert.Equal(t, 1.5, m["f"])
	assert.Equal(t, float64(1500*time.Millisecond), m["d"])
	assert.Equal(t, "2026-01-02T03:04:05Z", m["t"])
	assert.Equal(t, "boom", m["error"])
	assert.Equal(t, []any{"a", "b"}, m["urls"])
	assert.Equal(t, "1s", m["str"])
	assert.Equal(t, map[string]any{"x": 1.0}, m["obj"])
	assert.NotContains(t, m, "stacktrace")
	assert.Len(t, m, 17, "%v", m) // time, level, msg, logger, caller and the 12 fields that carry something
}

func TestLevels(t *testing.T) {
	lg, buf := jsonLogger(zapcore.InfoLevel)
	lg.Debug("filtered by the core's level")
	lg.Info("i")
	lg.Error("e")
	lg.DPanic("dp") // not in development mode: logs only
	got := lines(t, buf)
	require.Len(t, got, 3)
	assert.Equal(t, []any{"INFO", "ERROR", "DPANIC"}, []any{got[0]["level"], got[1]["level"], got[2]["level"]})

	for zl, want := range map[zapcore.Level]slog.Level{
		zapcore.DebugLevel: slog.LevelDebug, zapcore.InfoLevel: slog.LevelInfo, zapcore.WarnLevel: slog.LevelWarn,
		zapcore.ErrorLevel: slog.LevelError, zapcore.PanicLevel: LevelPanic, zapcore.FatalLevel: LevelFatal,
	} {
		assert.Equal(t, want, Level(zl), "%v", zl)
	}
	assert.Equal(t, zapcore.InfoLevel, lg.Level())
}

// The handler's own level applies too: a handler at warn drops info even when the core enables it.
func TestHandlerLevel(t *testing.T) {
	var buf bytes.Buffer
	lg := zap.New(NewCore(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), zapcore.DebugLevel))
	lg.Info("dropped")
	lg.Warn("kept")
	assert.NotContains(t, buf.String(), "dropped")
	assert.Contains(t, buf.String(), "msg=kept")
}

// A namespace holds every field after it, those given to With and the entry's own.
func TestNamespace(t *testing.T) {
	lg, buf := jsonLogger(zapcore.InfoLevel)
	lg.With(zap.String("a", "1"), zap.Namespace("ns"), zap.String("b", "2")).Info("m", zap.String("c", "3"))
	got := lines(t, buf)
	require.Len(t, got, 1)
	assert.Equal(t, "1", got[0]["a"])
	assert.Equal(t, map[string]any{"b": "2", "c": "3"}, got[0]["ns"])
}

func TestStack(t *testing.T) {
	lg, buf := jsonLogger(zapcore.InfoLevel, zap.AddStacktrace(zapcore.ErrorLevel))
	lg.Error("with a stack")
	got := lines(t, buf)
	require.Len(t, got, 1)
	assert.Contains(t, got[0][StackKey], "TestStack")
}

type nilStringer struct{ s *string }

func (n *nilStringer) String() string { return *n.s }

func TestPanickingStringer(t *testing.T) {
	lg, buf := jsonLogger(zapcore.InfoLevel)
	var s *nilStringer
	lg.Info("m", zap.Stringer("s", s))
	got := lines(t, buf)
	require.Len(t, got, 1)
	assert.Contains(t, got[0]["s"], "<PANIC=")
}
