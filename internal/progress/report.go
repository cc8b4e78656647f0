package progress

import (
	"context"
	"log/slog"
	"time"
)

// Sample is the counters at a moment.
type Sample struct {
	Counts
	At time.Time
}

// Figures are what two samples tell: the rates between them and the time left.
type Figures struct {
	// BytesPerSecond and RevisionsPerSecond are the rates between the two samples.
	BytesPerSecond, RevisionsPerSecond float64
	// Left is the time left at those rates; LeftKnown is false when no total says it.
	Left      time.Duration
	LeftKnown bool
}

// Measure computes the figures of the work between prev and cur. The time left comes from
// the revisions while they move toward a known total (the replay, the slow part of a
// restore), else from the bytes.
func Measure(prev, cur Sample) Figures {
	var f Figures
	secs := cur.At.Sub(prev.At).Seconds()
	if secs > 0 {
		f.BytesPerSecond = float64(cur.Bytes-prev.Bytes) / secs
		f.RevisionsPerSecond = float64(cur.Revisions-prev.Revisions) / secs
	}
	left := func(done, total int64, rate float64) {
		switch {
		case done >= total:
			f.Left, f.LeftKnown = 0, true
		case rate > 0:
			f.Left, f.LeftKnown = time.Duration(float64(total-done)/rate*float64(time.Second)), true
		}
	}
	switch {
	case cur.RevisionsTotal > 0 && cur.Revisions > 0:
		left(cur.Revisions, cur.RevisionsTotal, f.RevisionsPerSecond)
	case cur.BytesTotal > 0:
		left(cur.Bytes, cur.BytesTotal, f.BytesPerSecond)
	}
	return f
}

// LogEvery is how often Logger's owner should tick it when stderr is not a terminal.
const LogEvery = 5 * time.Second

// Logger writes a Progress as structured log lines, one per tick: phase, bytes, revisions,
// rates since the line before, and the time left.
type Logger struct {
	p    *Progress
	log  *slog.Logger
	last Sample
}

// NewLogger returns a Logger of p that writes to lg; start is when the work began.
func NewLogger(p *Progress, lg *slog.Logger, start time.Time) *Logger {
	return &Logger{p: p, log: lg, last: Sample{At: start}}
}

// Run writes a line for every tick until ticks is closed or ctx ends. The ticks' values
// are the times the lines are for (a time.Ticker's channel, or a test's).
func (l *Logger) Run(ctx context.Context, ticks <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case now, ok := <-ticks:
			if !ok {
				return
			}
			l.Report(now)
		}
	}
}

// Report writes one line for the counters at now.
func (l *Logger) Report(now time.Time) {
	cur := Sample{Counts: l.p.Load(), At: now}
	f := Measure(l.last, cur)
	l.last = cur
	attrs := []any{"phase", cur.Phase, "bytes", cur.Bytes, "bytes_total", cur.BytesTotal}
	if cur.RevisionsTotal > 0 || cur.Revisions > 0 {
		attrs = append(attrs, "revisions", cur.Revisions, "revisions_total", cur.RevisionsTotal, "revision", cur.Revision,
			"revisions_per_second", int64(f.RevisionsPerSecond))
	}
	attrs = append(attrs, "bytes_per_second", int64(f.BytesPerSecond))
	if f.LeftKnown {
		attrs = append(attrs, "eta", f.Left.Round(time.Second))
	}
	l.log.Info("progress", attrs...)
}
