package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// figure is one row of the table: what etcdbr did, what the baseline did in the same run,
// and the targets.
type figure struct {
	Name     string  `json:"figure"`
	Etcdbr   []value `json:"etcdbr"`
	Baseline []value `json:"baseline,omitempty"`
	// BaselineName says what the baseline is.
	BaselineName string `json:"baseline_name,omitempty"`
	// Ratio is etcdbr's compared value over the baseline's (RatioOf names it); 0 when there
	// is no ratio.
	Ratio   float64  `json:"ratio,omitempty"`
	RatioOf string   `json:"ratio_of,omitempty"`
	Targets []target `json:"targets,omitempty"`
	Note    string   `json:"note,omitempty"`
}

// value is one measured quantity.
type value struct {
	Name  string  `json:"name"` // e.g. wall_s, peak_rss_mib
	Value float64 `json:"value"`
}

// target is a goal and whether this run met it.
type target struct {
	Goal string `json:"goal"`
	Met  bool   `json:"met"`
}

// get returns the value named name.
func get(vs []value, name string) float64 {
	for _, v := range vs {
		if v.Name == name {
			return v.Value
		}
	}
	return 0
}

// compare sets the ratio of etcdbr's name over the baseline's.
func (f *figure) compare(name string) {
	if b := get(f.Baseline, name); b > 0 {
		f.Ratio, f.RatioOf = get(f.Etcdbr, name)/b, name
	}
}

// want adds a target.
func (f *figure) want(goal string, met bool) { f.Targets = append(f.Targets, target{goal, met}) }

// units are how values print in the table.
var units = map[string]string{
	"wall_s": "%.2f s", "ready_s": "%.2f s", "peak_rss_mib": "RSS %.0f MiB", "peak_anon_mib": "RssAnon %.0f MiB",
	"revisions_per_s": "%.0f rev/s", "mb_per_s": "%.0f MB/s", "ops_per_s": "%.0f ops/s", "delta_lag_s": "delta lag %.1f s",
	"wall_revisions_per_s": "%.0f rev/s of wall", "cpu_s": "CPU %.1f s", "validation_s": "validation %.3f s",
	"anon_growth_mib": "RssAnon +%.0f MiB", "learner_s": "a learner after %.2f s", "full_snapshot_s": "the full snapshot before the change %.2f s",
	"work_s":        "%.2f s without the lock's wait",
	"db_before_mib": "db %.0f MiB", "db_after_mib": "-> %.0f MiB", "defrag_s": "defrag %.2f s", "defrags": "%.0f defrag(s) in all", "p50_ms": "put p50 %.1f ms",
	"p99_ms": "p99 %.1f ms", "max_ms": "max %.1f ms", "puts": "(%.0f puts)", "done_s": "done after %.2f s", "recorded_s": "intent recorded in %.2f s",
}

func formatValues(vs []value) string {
	var parts []string
	for _, v := range vs {
		f, ok := units[v.Name]
		if !ok {
			f = v.Name + " %g"
		}
		parts = append(parts, fmt.Sprintf(f, v.Value))
	}
	return strings.Join(parts, ", ")
}

// printTable writes the figures as a Markdown table, notes below.
func printTable(w io.Writer, figs []figure) {
	fmt.Fprintln(w, "| figure | etcdbr | baseline | ratio | targets |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, f := range figs {
		base := formatValues(f.Baseline)
		if f.BaselineName != "" {
			base = f.BaselineName + ": " + base
		}
		ratio := ""
		if f.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f (%s)", f.Ratio, f.RatioOf)
		}
		var ts []string
		for _, t := range f.Targets {
			mark := "met"
			if !t.Met {
				mark = "MISSED"
			}
			ts = append(ts, t.Goal+": "+mark)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", f.Name, formatValues(f.Etcdbr), base, ratio, strings.Join(ts, "; "))
	}
	for _, f := range figs {
		if f.Note != "" {
			fmt.Fprintf(w, "- %s: %s\n", f.Name, f.Note)
		}
	}
}

// printJSON writes one JSON object per figure and line.
func printJSON(w io.Writer, figs []figure) error {
	enc := json.NewEncoder(w)
	for _, f := range figs {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}
