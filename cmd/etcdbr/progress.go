package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/etcdbr/etcdbr/internal/diskspace"
	"github.com/etcdbr/etcdbr/internal/progress"
)

// drawEvery is how often the progress display on a terminal is drawn.
const drawEvery = 200 * time.Millisecond

// watchProgress shows p while long work runs, until the returned stop is called, the way
// env.Progress says: by default a progress display when stderr is a terminal, else a log
// line every progress.LogEvery and one more at the end (so the last line holds the final
// counts); with "off", nothing. stop may be called more than once.
func watchProgress(ctx context.Context, env *Env, p *progress.Progress) (stop func()) {
	s := watch(ctx, env, p)
	return sync.OnceFunc(s)
}

// progressWatcher returns what shows a restore's progress (supervisor's WatchProgress): nil
// with --progress=off, so that the restore keeps no counters at all.
func progressWatcher(ctx context.Context, env *Env) func(*progress.Progress) (stop func()) {
	if env.Progress == "off" {
		return nil
	}
	return func(p *progress.Progress) func() { return watchProgress(ctx, env, p) }
}

func watch(ctx context.Context, env *Env, p *progress.Progress) (stop func()) {
	mode := env.Progress
	if mode == "" || mode == "auto" {
		mode = "log"
		if stderrIsTerminal(env.Stderr) {
			mode = "bar"
		}
	}
	if mode == "off" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if mode == "bar" {
		var w io.Writer = env.Stderr
		if env.stderrLines != nil {
			w = env.stderrLines.raw()
			env.stderrLines.setClearLine(true)
		}
		d := &display{p: p, w: w}
		ticker := time.NewTicker(drawEvery)
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-ticker.C:
					d.draw()
				}
			}
		})
		return func() {
			cancel()
			wg.Wait()
			ticker.Stop()
			d.draw()
			d.end()
			if env.stderrLines != nil {
				env.stderrLines.setClearLine(false)
			}
		}
	}
	start := time.Now()
	l := progress.NewLogger(p, env.Log, start)
	ticker := time.NewTicker(progress.LogEvery)
	wg.Go(func() { l.Run(ctx, ticker.C) })
	return func() {
		cancel()
		wg.Wait()
		ticker.Stop()
		l.Report(time.Now())
	}
}

// stderrIsTerminal reports whether w is a terminal.
func stderrIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// display draws a Progress as a progress bar with the rate and the time left: over the
// bytes read, and over the revisions replayed once their total is known (a restore's
// replay); the description names the phase, and during the replay the bytes read too.
// Phases shorter than a drawing interval are never seen: the bar is of counters, so
// whatever phase the last drawing finds, it shows the counts reached.
type display struct {
	p     *progress.Progress
	w     io.Writer
	revs  bool // the bar counts revisions, not bytes
	bar   *progressbar.ProgressBar
	max   int64
	title string
}

// draw brings the bar up to the counters, starting a new bar when its unit changes.
func (d *display) draw() {
	c := d.p.Load()
	revs := c.RevisionsTotal > 0
	value, max := c.Bytes, c.BytesTotal
	if revs {
		value, max = c.Revisions, c.RevisionsTotal
	}
	if max <= 0 {
		max = -1 // unknown: a spinner
	}
	title := fmt.Sprintf("%-6s", c.Phase)
	if revs {
		title = fmt.Sprintf("%-6s rev %d, %s read", c.Phase, c.Revision, diskspace.Bytes(c.Bytes))
	}
	if d.bar == nil || revs != d.revs {
		d.end()
		d.revs, d.max, d.title = revs, max, title
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(d.w),
			progressbar.OptionSetDescription(title),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
		}
		if revs {
			opts = append(opts, progressbar.OptionSetItsString("rev"))
		} else {
			opts = append(opts, progressbar.OptionShowBytes(true))
		}
		d.bar = progressbar.NewOptions64(max, opts...)
	}
	if max != d.max {
		d.bar.ChangeMax64(max)
		d.max = max
	}
	if title != d.title {
		d.bar.Describe(title)
		d.title = title
	}
	_ = d.bar.Set64(value) // a display that cannot write is no reason to stop the work
	d.redrawFinished()
}

// redrawFinished draws a full bar again: the bar draws itself no more once it reached its
// total, and a log line written since (the sync after the replay, the restore's last lines)
// cleared its line.
func (d *display) redrawFinished() {
	if d.bar != nil && d.bar.IsFinished() {
		fmt.Fprint(d.w, "\r\x1b[K"+strings.TrimLeft(d.bar.String(), "\r"))
	}
}

// end leaves the current bar as it is drawn and moves to the next line.
func (d *display) end() {
	if d.bar == nil {
		return
	}
	d.redrawFinished()
	_ = d.bar.Exit()
	fmt.Fprintln(d.w)
	d.bar = nil
}
