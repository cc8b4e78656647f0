package testsuite

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/internal/storetest"
)

// badInput is one command line that etcdbr must refuse (or warn about), with what it must
// say and the paths it must not create.
type badInput struct {
	name   string
	args   []string
	env    []string
	code   int
	says   []string
	absent []string
}

// check runs the binary and checks its exit code, its output and the paths left absent.
func (c badInput) check(t *testing.T) {
	t.Helper()
	code, out := runToExit(t, c.args, c.env...)
	if code != c.code {
		t.Errorf("exit code %d, want %d; output:\n%s", code, c.code, out)
	}
	for _, s := range c.says {
		if !strings.Contains(out, s) {
			t.Errorf("output does not mention %q:\n%s", s, out)
		}
	}
	for _, p := range c.absent {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after the command (err %v); output:\n%s", p, err, out)
		}
	}
}

// TestBadInputs: inputs that etcdbr once accepted silently get a refusal (exit 2) that names
// the problem and the fix, and leave nothing behind: no default store beside the data dir,
// no store directory for a mistyped file:// URL. docs/inputs.md lists them.
func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	defaultStore := m.DataDir + ".backups"
	// run with the default store (no --store): a usage error must not create it.
	runDefault := func(extra ...string) []string {
		args := append([]string{"run", "--data-dir", m.DataDir}, extra...)
		return append(append(args, "--"), m.etcdFlags()...)
	}
	missing := filepath.Join(dir, "typo", "store")
	missingURL := "file://" + missing
	empty := filepath.Join(dir, "empty-store")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	restoreDir := filepath.Join(dir, "restored")
	shortToken := filepath.Join(dir, "short-token")
	if err := os.WriteFile(shortToken, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noStore := []string{"no such store", "directory " + missing + " does not exist", "check the path"}
	cases := []badInput{
		{name: "max-backups without limit", args: runDefault("--max-backups", "3"), code: 2,
			says:   []string{"--max-backups 3 applies only to --gc-policy limit", "add --gc-policy limit, or drop --max-backups"},
			absent: []string{defaultStore, m.DataDir}},
		{name: "max-backups without limit, from the environment", args: runDefault(), env: []string{"ETCDBR_MAX_BACKUPS=3"}, code: 2,
			says: []string{"--max-backups 3 applies only to --gc-policy limit"}, absent: []string{defaultStore, m.DataDir}},
		{name: "limit without max-backups", args: runDefault("--gc-policy", "limit"), code: 2,
			says: []string{"--gc-policy limit needs --max-backups N"}, absent: []string{defaultStore, m.DataDir}},
		{name: "schedule every 0s", args: runDefault("--full-snapshot-schedule", "@every 0s"), code: 2,
			says: []string{"--full-snapshot-schedule", "@every 0s", "shorter than 1s", "at least @every 1s"}, absent: []string{defaultStore, m.DataDir}},
		{name: "schedule every 1ms", args: runDefault("--full-snapshot-schedule", "@every 1ms"), code: 2,
			says: []string{"shorter than 1s"}, absent: []string{defaultStore, m.DataDir}},
		{name: "schedule in fractions of seconds", args: runDefault("--full-snapshot-schedule", "@every 1500ms"), code: 2,
			says: []string{"whole seconds", "e.g. @every 2s"}, absent: []string{defaultStore, m.DataDir}},
		{name: "sidecar schedule every 0s", args: []string{"snapshot", "--store", missingURL, "--full-snapshot-schedule", "@every 0s"}, code: 2,
			says: []string{"shorter than 1s"}, absent: []string{missing}},
		{name: "restore to revision 0", args: []string{"restore", "--data-dir", restoreDir, "--store", empty, "--to-revision", "0"}, code: 2,
			says: []string{"--to-revision 0: revisions start at 1; omit --to-revision for the newest point"}, absent: []string{restoreDir}},
		{name: "restore to revision 0, from the environment", args: []string{"restore", "--data-dir", restoreDir, "--store", empty},
			env: []string{"ETCDBR_TO_REVISION=0"}, code: 2, says: []string{"--to-revision 0: revisions start at 1"}, absent: []string{restoreDir}},
		{name: "restore to revision -3", args: []string{"restore", "--data-dir", restoreDir, "--store", empty, "--to-revision", "-3"}, code: 2,
			says: []string{"--to-revision", `"-3"`}, absent: []string{restoreDir}},
		{name: "restore to revision=-3", args: []string{"restore", "--data-dir", restoreDir, "--store", empty, "--to-revision=-3"}, code: 2,
			says: []string{"--to-revision -3: revisions start at 1"}, absent: []string{restoreDir}},

		// Commands that read a store: a missing one is "no such store", and stays missing.
		{name: "list a missing store", args: []string{"list", "--store", missingURL}, code: 2, says: noStore, absent: []string{missing}},
		{name: "verify a missing store", args: []string{"verify", "--store", missingURL}, code: 2, says: noStore, absent: []string{missing}},
		{name: "restore from a missing store", args: []string{"restore", "--data-dir", restoreDir, "--store", missingURL}, code: 2,
			says: noStore, absent: []string{missing, restoreDir}},
		{name: "gc --dry-run of a missing store", args: []string{"gc", "--store", missing, "--dry-run"}, code: 2, says: noStore, absent: []string{missing}},
		{name: "gc of a missing store", args: []string{"gc", "--store", missingURL}, code: 2, says: noStore, absent: []string{missing}},
		{name: "copy from a missing store", args: []string{"copy", "--from", missingURL, "--to", filepath.Join(dir, "copy")}, code: 2,
			says: append([]string{"--from"}, noStore...), absent: []string{missing, filepath.Join(dir, "copy")}},
		{name: "validate against a missing store", args: []string{"validate", "--data-dir", m.DataDir, "--store", missingURL}, code: 2,
			says: noStore, absent: []string{missing}},
		// Store URLs that name no store etcdbr can open.
		{name: "an unknown store scheme", args: []string{"list", "--store", "s4://bucket/x"}, code: 2,
			says: []string{`unknown store scheme "s4": use file:///dir, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix`}},
		{name: "a store URL without a bucket", args: []string{"list", "--store", "s3:///x"}, code: 2,
			says: []string{"no bucket name in the store URL: use s3://bucket/prefix"}},
		{name: "credentials in a store URL", args: []string{"list", "--store", "s3://user:secret@bucket/x"}, code: 2,
			says: []string{"credentials in a s3:// store URL are not supported", "user:xxxxx@"}},
		{name: "a mistyped query parameter", args: []string{"list", "--store", "s3://bucket/x?regoin=eu-west-1"}, code: 2,
			says: []string{`unknown query parameter "regoin"`}},
		// An empty store is not a missing one.
		{name: "list an empty store", args: []string{"list", "--store", "file://" + empty}, code: 0, says: []string{"restorable: nothing"}},

		// A cluster of several members: how its peers are reached while this member's etcd is down.
		{name: "a cluster on other ports than 2380 without --cluster-endpoints",
			args: append(runDefault(), "--initial-cluster=m1="+m.PeerURL+",m2=http://127.0.0.1:12399"), code: 2,
			says:   []string{"peer m2", "http://127.0.0.1:12399", "--cluster-endpoints (ETCDBR_CLUSTER_ENDPOINTS)"},
			absent: []string{defaultStore, m.DataDir}},
		{name: "cluster endpoints that are not URLs", args: runDefault("--cluster-endpoints", "127.0.0.1:2379"), code: 2,
			says: []string{"--cluster-endpoints", "not a client URL"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a cluster certificate without its key", args: runDefault("--cluster-cert", filepath.Join(dir, "c.crt")), code: 2,
			says: []string{"--cluster-cert and --cluster-key go together"}, absent: []string{defaultStore, m.DataDir}},

		// Every other flag of run with a value it cannot use.
		{name: "delta period under a second", args: runDefault("--delta-snapshot-period", "500ms"), code: 2,
			says: []string{"--delta-snapshot-period 500ms: use at least 1s, or 0 to disable delta snapshots"}, absent: []string{defaultStore, m.DataDir}},
		{name: "delta memory under 1MiB", args: runDefault("--delta-snapshot-memory-limit", "1000"), code: 2,
			says: []string{"--delta-snapshot-memory-limit 1000: use at least 1MiB"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a size in an unknown unit", args: runDefault("--delta-snapshot-memory-limit", "12XB"), code: 2,
			says: []string{`invalid size "12XB"`, "e.g. 64MiB"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a negative max-backup-age", args: runDefault("--max-backup-age=-1s"), code: 2,
			says: []string{"--max-backup-age -1s: give a positive duration, or 0 for the default"}, absent: []string{defaultStore, m.DataDir}},
		{name: "max-backup-age under two delta periods", args: runDefault("--max-backup-age", "15s"), code: 2,
			says: []string{"shorter than two delta periods", "give at least 20s"}, absent: []string{defaultStore, m.DataDir}},
		{name: "no old data dir kept", args: runDefault("--keep-old-data-dirs", "0"), code: 2,
			says: []string{"--keep-old-data-dirs 0: keep at least 1"}, absent: []string{defaultStore, m.DataDir}},
		{name: "gc period under a second", args: runDefault("--gc-period", "1ms"), code: 2,
			says: []string{"--gc-period 1ms: use at least 1s, or 0 to disable garbage collection"}, absent: []string{defaultStore, m.DataDir}},
		{name: "an unknown time zone", args: runDefault("--gc-time-zone", "Mars/Olympus"), code: 2,
			says: []string{`--gc-time-zone "Mars/Olympus"`, "IANA time zone name"}, absent: []string{defaultStore, m.DataDir}},
		{name: "keep-within in an unknown unit", args: runDefault("--keep-within", "7x"), code: 2,
			says: []string{`invalid duration "7x"`, "36h, 7d, 2w"}, absent: []string{defaultStore, m.DataDir}},
		{name: "an unknown gc policy", args: runDefault("--gc-policy", "forever"), code: 2,
			says: []string{`--gc-policy must be one of "exponential","limit"`}, absent: []string{defaultStore, m.DataDir}},
		{name: "compact period under a second", args: runDefault("--compact-period", "1ms"), code: 2,
			says: []string{"--compact-period 1ms: use at least 1s, or 0 to disable compaction"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a negative compaction bound", args: runDefault("--compact-after-revisions=-1"), code: 2,
			says: []string{"--compact-after-revisions -1: give 0 (no bound) or more"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a negative learner timeout", args: runDefault("--learner-timeout=-1s"), code: 2,
			says: []string{"--learner-timeout -1s: give a positive duration"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a takeover bound under ten seconds", args: runDefault("--store-takeover-after", "5s"), code: 2,
			says:   []string{"--store-takeover-after 5s: use at least 10s, or 0 to never let a new machine take the store over"},
			absent: []string{defaultStore, m.DataDir}},
		{name: "a negative takeover bound, from the environment", args: runDefault(), env: []string{"ETCDBR_STORE_TAKEOVER_AFTER=-1s"}, code: 2,
			says: []string{"--store-takeover-after -1s: use at least 10s, or 0"}, absent: []string{defaultStore, m.DataDir}},
		{name: "an unknown validation depth", args: runDefault("--validation", "deep"), code: 2,
			says: []string{`--validation must be one of "auto","quick","full"`}, absent: []string{defaultStore, m.DataDir}},
		{name: "an unknown etcd flag", args: append(runDefault(), "--bogus"), code: 2,
			says: []string{"unknown etcd flag --bogus", "see etcd --help"}, absent: []string{defaultStore, m.DataDir}},
		{name: "two data dirs", args: append(runDefault(), "--data-dir="+filepath.Join(dir, "other")), code: 2,
			says:   []string{"and etcd's --data-dir", "differ: give it once"},
			absent: []string{defaultStore, m.DataDir, filepath.Join(dir, "other")}},

		// An empty path is not the working directory (the delta period stops run before etcd
		// starts, were it taken).
		{name: "an empty data dir from the environment", args: append([]string{"run", "--delta-snapshot-period=500ms", "--"}, m.etcdFlags()...),
			env: []string{"ETCDBR_DATA_DIR="}, code: 2,
			says: []string{"--data-dir: empty path: give a path (. for the current directory)", `ETCDBR_DATA_DIR=""`}},
		{name: "an empty store from the environment", args: runDefault("--delta-snapshot-period=500ms"), env: []string{"ETCDBR_STORE="}, code: 2,
			says:   []string{"--store: empty value: give one, or leave the flag and its ETCDBR_ variable out", `ETCDBR_STORE=""`},
			absent: []string{defaultStore, m.DataDir}},
		{name: "an empty spool dir", args: runDefault("--compact-spool-dir="), code: 2,
			says: []string{"--compact-spool-dir: empty path"}, absent: []string{defaultStore, m.DataDir}},

		// The API's files are read before anything is created.
		{name: "an API token shorter than 16 bytes", args: runDefault("--api-token-file", shortToken), code: 2,
			says:   []string{"--api-token-file", "shorter than 16 bytes", "use a long random one"},
			absent: []string{defaultStore, m.DataDir}},
		{name: "a missing API token file", args: runDefault(), env: []string{"ETCDBR_API_TOKEN_FILE=" + filepath.Join(dir, "no-token")}, code: 2,
			says: []string{"--api-token-file", "no such file"}, absent: []string{defaultStore, m.DataDir}},
		{name: "a missing API certificate", args: runDefault("--api-cert", filepath.Join(dir, "no.crt"), "--api-key", filepath.Join(dir, "no.key")), code: 2,
			says: []string{"--api-cert", "no such file"}, absent: []string{defaultStore, m.DataDir}},

		// A mistyped variable is named, with the one meant.
		{name: "mistyped variable", args: []string{"list", "--store", empty}, env: []string{"ETCDBR_STOR=" + missingURL}, code: 0,
			says: []string{"unknown environment variable ETCDBR_STOR is ignored: did you mean ETCDBR_STORE?", "restorable: nothing"}},
		{name: "mistyped variable and a usage error", args: runDefault("--bogus"), env: []string{"ETCDBR_FULL_SNAPSHOT_SCHEDUL=@daily"}, code: 2,
			says:   []string{"ETCDBR_FULL_SNAPSHOT_SCHEDUL is ignored: did you mean ETCDBR_FULL_SNAPSHOT_SCHEDULE?", "unknown flag --bogus"},
			absent: []string{defaultStore, m.DataDir}},
	}
	for _, c := range cases {
		t.Run(c.name, c.check)
	}
	// etcd's namespace is etcd's: etcdbr does not warn about ETCD_* variables.
	t.Run("etcd variables", func(t *testing.T) {
		code, out := runToExit(t, []string{"list", "--store", empty}, "ETCD_STORE=x", "ETCD_NAME=m1")
		if code != 0 || strings.Contains(out, "unknown environment variable") {
			t.Errorf("exit code %d; output:\n%s", code, out)
		}
	})
}

// TestMissingBucket: a read-only command on an object store whose bucket does not exist
// says so (exit 2), against the real test servers (MinIO, fake-gcs-server, Azurite).
func TestMissingBucket(t *testing.T) {
	for _, kind := range []storetest.Kind{storetest.S3, storetest.GCS, storetest.Azure} {
		svc, ok := storetest.ServiceFromEnv(kind)
		t.Run(string(kind), func(t *testing.T) {
			if !ok {
				if storetest.Required() {
					t.Fatal(storetest.MissingHelp)
				}
				t.Skip(storetest.MissingHelp)
			}
			bucket := storetest.NewBucketName()
			badInput{
				args: []string{"list", "--store", svc.URL(bucket, "clusters/one")},
				env:  svc.ProviderEnv(),
				code: 2,
				says: []string{"no such store", "the bucket does not exist", "etcdbr never creates buckets"},
			}.check(t)
			// The same bucket, created, is an empty store.
			if err := svc.CreateBucket(context.Background(), bucket); err != nil {
				t.Fatal(err)
			}
			badInput{
				args: []string{"list", "--store", svc.URL(bucket, "clusters/one")},
				env:  svc.ProviderEnv(),
				says: []string{"restorable: nothing"},
			}.check(t)
		})
	}
}

// TestMistypedStoreAsEtcd: in a static pod etcdbr runs as etcd and takes its settings from
// ETCDBR_* variables. A mistyped ETCDBR_STORE leaves the store at its default, a directory
// beside the data dir (off the pod's volume in kubeadm's layout): the log says so at start,
// in etcd's JSON, naming the variable that was meant, before the default store's warning.
func TestMistypedStoreAsEtcd(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	etcdPath := filepath.Join(dir, "bin", "etcd")
	if err := os.MkdirAll(filepath.Dir(etcdPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary, etcdPath); err != nil {
		t.Fatal(err)
	}
	meant := "file://" + filepath.Join(dir, "volume", "backups")
	p := startAs(t, etcdPath, append([]string{"--data-dir=" + m.DataDir}, m.etcdFlags()...),
		"ETCDBR_STROE="+meant, "ETCDBR_LISTEN_API=127.0.0.1:0", "ETCDBR_FULL_SNAPSHOT_SCHEDULE=@daily")
	p.waitLine("unknown environment variable ETCDBR_STROE is ignored: did you mean ETCDBR_STORE?", time.Minute)
	p.waitLine("no --store given", time.Minute)
	client(t, m.ClientURL) // etcd serves: a warning, not a refusal
	p.stop()

	var warning map[string]any
	for _, line := range strings.Split(p.Output(), "\n") {
		if strings.Contains(line, "ETCDBR_STROE") {
			if err := json.Unmarshal([]byte(line), &warning); err != nil {
				t.Fatalf("the warning is not etcd's JSON: %q: %v", line, err)
			}
			break
		}
	}
	if warning["level"] != "warn" && warning["level"] != "WARN" {
		t.Errorf("the warning is logged at level %v, want warn: %v", warning["level"], warning)
	}
	if strings.Index(p.Output(), "ETCDBR_STROE") > strings.Index(p.Output(), "no --store given") {
		t.Errorf("the mistyped variable is named after the default store's warning:\n%s", p.Output())
	}
	if _, err := os.Stat(filepath.Join(dir, "volume")); !os.IsNotExist(err) {
		t.Errorf("the store the mistyped variable names was created (err %v)", err)
	}
}
