// Package slogzap is a zapcore.Core that writes to a slog.Handler, so that a library that
// logs with zap (etcd) logs in the same format and to the same place as the program that
// logs with log/slog. (go.uber.org/zap/exp/zapslog goes the other way: a slog.Handler that
// writes to a zap core.)
package slogzap

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"go.uber.org/zap/zapcore"
)

// The slog levels of zap's levels above error (slog has none): ReplaceLevelNames names them.
const (
	LevelDPanic = slog.LevelError + 1
	LevelPanic  = slog.LevelError + 2
	LevelFatal  = slog.LevelError + 3
)

// Attribute keys of what a zap entry carries besides its message and fields.
const (
	LoggerKey = "logger"     // the zap logger's name (zap.Logger.Named), e.g. "raft"
	CallerKey = "caller"     // file:line of the log call, as zap prints it
	StackKey  = "stacktrace" // the stack trace zap took for the entry
)

// Level returns the slog level of zap level l.
func Level(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.DPanicLevel:
		return LevelDPanic
	case l == zapcore.PanicLevel:
		return LevelPanic
	default:
		return LevelFatal
	}
}

// ReplaceLevelNames is a slog.HandlerOptions.ReplaceAttr that prints LevelDPanic,
// LevelPanic and LevelFatal as DPANIC, PANIC and FATAL instead of ERROR+1, ERROR+2 and
// ERROR+3.
func ReplaceLevelNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) != 0 || a.Key != slog.LevelKey {
		return a
	}
	l, ok := a.Value.Any().(slog.Level)
	if !ok {
		return a
	}
	switch l {
	case LevelDPanic:
		a.Value = slog.StringValue("DPANIC")
	case LevelPanic:
		a.Value = slog.StringValue("PANIC")
	case LevelFatal:
		a.Value = slog.StringValue("FATAL")
	}
	return a
}

// NewCore returns a core that writes the entries enab enables to h: the entry's time,
// level (Level) and message become the record's, its logger name, caller and stack trace
// (when set) the attributes LoggerKey, CallerKey and StackKey, and its fields attributes in
// their order (a zap.Namespace becomes a group of the fields after it). h's own level
// applies as well: give it the lowest level to let enab alone decide.
func NewCore(h slog.Handler, enab zapcore.LevelEnabler) zapcore.Core {
	return &core{h: h, enab: enab}
}

type core struct {
	h      slog.Handler
	enab   zapcore.LevelEnabler
	fields []zapcore.Field // from With, before the entry's own
}

// Level reports the minimum level enabled (zapcore.LevelOf uses it).
func (c *core) Level() zapcore.Level { return zapcore.LevelOf(c.enab) }

func (c *core) Enabled(l zapcore.Level) bool {
	return c.enab.Enabled(l) && c.h.Enabled(context.Background(), Level(l))
}

// With keeps the fields and converts them with each entry, so that a namespace among them
// also holds the entry's fields, as in zap.
func (c *core) With(fields []zapcore.Field) zapcore.Core {
	if len(fields) == 0 {
		return c
	}
	all := make([]zapcore.Field, 0, len(c.fields)+len(fields))
	return &core{h: c.h, enab: c.enab, fields: append(append(all, c.fields...), fields...)}
}

func (c *core) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *core) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(ent.Time, Level(ent.Level), ent.Message, 0)
	if ent.LoggerName != "" {
		r.AddAttrs(slog.String(LoggerKey, ent.LoggerName))
	}
	if ent.Caller.Defined {
		r.AddAttrs(slog.String(CallerKey, ent.Caller.TrimmedPath()))
	}
	all := fields
	if len(c.fields) > 0 {
		all = append(append(make([]zapcore.Field, 0, len(c.fields)+len(fields)), c.fields...), fields...)
	}
	r.AddAttrs(attrs(all)...)
	if ent.Stack != "" {
		r.AddAttrs(slog.String(StackKey, ent.Stack))
	}
	if err := c.h.Handle(context.Background(), r); err != nil {
		return fmt.Errorf("write log entry %q: %w", ent.Message, err)
	}
	return nil
}

// Sync does nothing: slog handlers write each record as it comes.
func (c *core) Sync() error { return nil }

// attrs converts zap fields to slog attributes; a namespace holds every field after it.
func attrs(fields []zapcore.Field) []slog.Attr {
	out := make([]slog.Attr, 0, len(fields))
	for i, f := range fields {
		if f.Type == zapcore.NamespaceType {
			return append(out, slog.GroupAttrs(f.Key, attrs(fields[i+1:])...))
		}
		if a, ok := attr(f); ok {
			out = append(out, a)
		}
	}
	return out
}

// attr converts one zap field that is not a namespace; ok is false for a field that
// carries nothing (zap.Skip, a nil error).
func attr(f zapcore.Field) (a slog.Attr, ok bool) {
	switch f.Type {
	case zapcore.SkipType:
		return a, false
	case zapcore.StringType:
		return slog.String(f.Key, f.String), true
	case zapcore.BoolType:
		return slog.Bool(f.Key, f.Integer == 1), true
	case zapcore.Int64Type, zapcore.Int32Type, zapcore.Int16Type, zapcore.Int8Type:
		return slog.Int64(f.Key, f.Integer), true
	case zapcore.Uint64Type, zapcore.Uint32Type, zapcore.Uint16Type, zapcore.Uint8Type, zapcore.UintptrType:
		return slog.Uint64(f.Key, uint64(f.Integer)), true
	case zapcore.Float64Type:
		return slog.Float64(f.Key, math.Float64frombits(uint64(f.Integer))), true
	case zapcore.Float32Type:
		return slog.Float64(f.Key, float64(math.Float32frombits(uint32(f.Integer)))), true
	case zapcore.DurationType:
		return slog.Duration(f.Key, time.Duration(f.Integer)), true
	case zapcore.TimeType:
		t := time.Unix(0, f.Integer)
		if loc, ok := f.Interface.(*time.Location); ok {
			t = t.In(loc)
		}
		return slog.Time(f.Key, t), true
	case zapcore.TimeFullType:
		if t, ok := f.Interface.(time.Time); ok {
			return slog.Time(f.Key, t), true
		}
	case zapcore.ErrorType:
		err, _ := f.Interface.(error)
		if err == nil {
			return a, false
		}
		return slog.String(f.Key, safeString(err.Error)), true
	case zapcore.StringerType:
		s, _ := f.Interface.(fmt.Stringer)
		if s == nil {
			return slog.String(f.Key, "<nil>"), true
		}
		return slog.String(f.Key, safeString(s.String)), true
	}
	// Arrays, objects, reflected values, byte strings...: as zap's map encoder holds them
	// (slices of values, maps by key, the value itself), which slog's handlers print.
	enc := zapcore.NewMapObjectEncoder()
	f.AddTo(enc)
	v, ok := enc.Fields[f.Key]
	if !ok {
		return a, false
	}
	return slog.Any(f.Key, v), true
}

// safeString calls s, turning a panic (a method called on a nil pointer) into the text that
// says so, as zap does.
func safeString(s func() string) (out string) {
	defer func() {
		if r := recover(); r != nil {
			out = fmt.Sprintf("<PANIC=%v>", r)
		}
	}()
	return s()
}
