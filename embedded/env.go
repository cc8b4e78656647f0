package embedded

import (
	"flag"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/pkg/v3/flags"
)

// envMap turns os.Environ-style "KEY=value" entries into a map.
func envMap(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// setFlagsFromEnv sets every flag of fs that was not given on the command line
// from its ETCD_* variable, with the rules of etcd's flags.SetFlagsFromEnv as
// etcd 3.6 uses it: empty variables are ignored; ETCD_VERSION is ignored (etcd
// unsets it before reading the environment); a variable for a flag that was given
// on the command line is an error (etcd exits); it returns the names of the
// ETCD_* variables that match no flag, which etcd warns about.
func setFlagsFromEnv(fs *flag.FlagSet, env map[string]string) (unrecognized []string, err error) {
	versionKey := flags.FlagToEnv(envPrefix, "version")

	onCmdLine := make(map[string]string) // env key -> flag name
	fs.Visit(func(f *flag.Flag) {
		onCmdLine[flags.FlagToEnv(envPrefix, f.Name)] = f.Name
	})
	var conflicts []string
	for key, name := range onCmdLine {
		if _, ok := env[key]; ok && key != versionKey {
			conflicts = append(conflicts, fmt.Sprintf("%s and --%s", key, name))
		}
	}
	if len(conflicts) > 0 {
		sort.Strings(conflicts)
		return nil, fmt.Errorf("etcd flag given both as environment variable and on the command line (%s): "+
			"etcd refuses this (\"conflicting environment variable is shadowed by corresponding command-line flag\"); unset one of them",
			strings.Join(conflicts, ", "))
	}

	known := make(map[string]bool)
	var setErr error
	fs.VisitAll(func(f *flag.Flag) {
		key := flags.FlagToEnv(envPrefix, f.Name)
		known[key] = true
		if _, set := onCmdLine[key]; set || key == versionKey || setErr != nil {
			return
		}
		val := env[key]
		if val == "" {
			return
		}
		if err := fs.Set(f.Name, val); err != nil {
			setErr = fmt.Errorf("invalid value %q for environment variable %s: %w", val, key, err)
		}
	})
	if setErr != nil {
		return nil, setErr
	}

	for key := range env {
		if strings.HasPrefix(key, envPrefix+"_") && !known[key] {
			unrecognized = append(unrecognized, key)
		}
	}
	sort.Strings(unrecognized)
	return unrecognized, nil
}
