package main

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/alecthomas/kong"
)

// pathMapper decodes the flags of type "path" as kong does (~ expanded, made absolute),
// except that an empty value is refused. kong takes "" as the current directory, so an
// ETCDBR_DATA_DIR that came out empty (a template, a missing ConfigMap key) would put
// etcd's data dir, and the default store beside it, in the working directory, and an empty
// ETCDBR_COMPACT_SPOOL_DIR would build dbs there.
type pathMapper struct{}

// Decode reads one path.
func (pathMapper) Decode(ctx *kong.DecodeContext, target reflect.Value) error {
	if target.Kind() != reflect.String {
		return fmt.Errorf("a path flag must be a string, not %s", target.Type())
	}
	var path string
	if err := ctx.Scan.PopValueInto("path", &path); err != nil {
		return err
	}
	if strings.TrimSpace(path) == "" {
		return fmt.Errorf("empty path: give a path (. for the current directory), or leave the flag and its ETCDBR_ variable out")
	}
	target.SetString(kong.ExpandPath(path))
	return nil
}

// nonEmptyMapper decodes a string flag that is given a value or left out, never emptied:
// --store "" (or ETCDBR_STORE set to nothing) would otherwise read as "no store given", and
// run would back up into the default store beside the data dir (off a static pod's volume)
// instead of the store that was meant.
type nonEmptyMapper struct{}

// Decode reads one value.
func (nonEmptyMapper) Decode(ctx *kong.DecodeContext, target reflect.Value) error {
	if target.Kind() != reflect.String {
		return fmt.Errorf("a nonempty flag must be a string, not %s", target.Type())
	}
	var value string
	if err := ctx.Scan.PopValueInto("value", &value); err != nil {
		return err
	}
	if strings.TrimSpace(value) == "" {
		return fmt.Errorf("empty value: give one, or leave the flag and its ETCDBR_ variable out")
	}
	target.SetString(value)
	return nil
}
