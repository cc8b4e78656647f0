package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
)

// ListCmd is `etcdbr list`.
type ListCmd struct {
	StoreFlags `embed:""`
}

// Run prints a table of the store's backups, oldest first.
func (c *ListCmd) Run(ctx context.Context, env *Env) error {
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	fulls, err := store.List(ctx, snapstore.KindFull)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tREVISION\tTIME\tSIZE\tOBJECT")
	for _, s := range fulls {
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\n", s.Kind, s.Revision, s.Time.UTC().Format(time.RFC3339), s.Size, s.Key)
	}
	return w.Flush()
}
