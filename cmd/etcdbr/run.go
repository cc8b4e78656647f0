package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc/grpclog"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// errHelpShown means a help or version text was printed instead of running.
var errHelpShown = errors.New("help shown")

// RunCmd is `etcdbr run`.
type RunCmd struct {
	GCFlags              `embed:""`
	CompactFlags         `embed:""`
	DefragFlags          `embed:""`
	StoreFlags           `embed:""`
	DataDir              string `help:"etcd's data dir (same as etcd's --data-dir; default: etcd's, <name>.etcd)." env:"ETCDBR_DATA_DIR" type:"path"`
	FullSnapshotSchedule string `help:"Cron schedule of full snapshots (five fields, or @hourly, @daily...)." default:"0 * * * *" env:"ETCDBR_FULL_SNAPSHOT_SCHEDULE"`
	DeltaFlags           `embed:""`
	MaxBackupAge         time.Duration `help:"Readiness (/readyz) fails once a write has waited longer than this to reach the store (0: 5m, or 30 delta periods if longer; without deltas the full snapshot period plus 5m)." default:"0s" env:"ETCDBR_MAX_BACKUP_AGE"`
	Validation           string        `help:"How deeply the data dir is checked before etcd starts: quick (trust a clean stop: layout, file sizes and times, the db's meta pages; without a clean-stop marker it validates fully), full (every db page, every WAL record), auto (quick after a clean stop, full otherwise)." default:"auto" enum:"auto,quick,full" env:"ETCDBR_VALIDATION"`
	ForceRestore         bool          `help:"Restore from the store even when the data dir belongs to another cluster than the store, or the etcd flags create another cluster (other peer URLs or --initial-cluster-token); the data dir is moved aside, never deleted, and the store then belongs to the restored cluster." env:"ETCDBR_FORCE_RESTORE"`
	StoreTakeoverAfter   time.Duration `name:"store-takeover-after" placeholder:"DURATION" help:"A new machine (a single member with no data dir whose etcd flags create another cluster: other peer URLs) restores from the store and takes it over once this member's cluster has left its liveness record in the store unchanged this long: its etcdbr rewrites the record every tenth of it while it backs up (one small PUT). At least 10s; 0: never (--force-restore is needed then)." default:"10m" env:"ETCDBR_STORE_TAKEOVER_AFTER"`
	KeepOldDataDirs      int           `help:"How many data dirs moved aside by restores are kept (at least 1)." default:"1" env:"ETCDBR_KEEP_OLD_DATA_DIRS"`
	UnbackedRevisions    int64         `name:"unbacked-revisions" placeholder:"N" default:"1000000000" help:"How many revisions the member may have served beyond the store's newest without backing them up: a restore at start (lost or corrupt data dir) starts a new history past the store's newest plus this, marked compacted, so that clients (kube-apiserver, informers) list again." env:"ETCDBR_UNBACKED_REVISIONS"`
	RestoreOnCorrupt     bool          `help:"When etcd raises a CORRUPT alarm (single-member cluster), restore the newest backup and restart etcd in place; without it the alarm is only reported." env:"ETCDBR_RESTORE_ON_CORRUPT"`
	RestoreFrom          string        `placeholder:"URL" help:"While --store holds no full snapshot, start-up compares the data dir with this store and restores from it when it must (missing, corrupt or behind it): the backups of another tool (an etcd-backup-restore store, an etcdctl or k3s snapshot file; docs/migrate.md) or another etcdbr store. Only read." env:"ETCDBR_RESTORE_FROM"`
	APIFlags             `embed:""`
	ClusterFlags         `embed:""`
	EtcdArgs             []string `arg:"" optional:"" name:"etcd-flags" help:"etcd's own flags, after --."`
}

// ClusterFlags are how a member of a cluster of several members reaches its peers while its
// own etcd is down (the learner path), and how the leader's etcdbr looks after learners.
type ClusterFlags struct {
	ClusterEndpoints   []string      `name:"cluster-endpoints" placeholder:"URL,..." sep:"," help:"Client URLs of the cluster's members (this member's own may be among them). Default: each --initial-cluster peer URL with port 2380 replaced by 2379 (etcd's ports, kubeadm's layout); required in a cluster whose peer URLs use other ports. Give it also when --initial-cluster names only this member but the cluster has more (kubeadm's first control-plane node)." env:"ETCDBR_CLUSTER_ENDPOINTS"`
	ClusterCert        string        `name:"cluster-cert" help:"Client certificate (PEM) for --cluster-endpoints (default: etcd's --cert-file; kubeadm's etcd server certificate is valid for client authentication)." env:"ETCDBR_CLUSTER_CERT" type:"path"`
	ClusterKey         string        `name:"cluster-key" help:"Key (PEM) of --cluster-cert (default: etcd's --key-file)." env:"ETCDBR_CLUSTER_KEY" type:"path"`
	ClusterCA          string        `name:"cluster-ca" help:"CA certificates (PEM) that sign the peers' client certificates (default: etcd's --trusted-ca-file)." env:"ETCDBR_CLUSTER_CA" type:"path"`
	ClusterRestorePoll time.Duration `name:"cluster-restore-poll" help:"How often this member reads the store for a whole-cluster restore (etcdbr cluster restore), also while etcd has no quorum or waits for its peers." default:"2s" env:"ETCDBR_CLUSTER_RESTORE_POLL"`
	AutoRestoreAfter   time.Duration `name:"auto-restore-on-quorum-loss-after" placeholder:"DURATION" help:"Restore the whole cluster from the store's newest point by itself once this member has seen the quorum lost this long and the store received nothing since (what etcdbr cluster restore does; the writes after the store's newest revision are lost). Off (0) by default: a person decides." env:"ETCDBR_AUTO_RESTORE_ON_QUORUM_LOSS_AFTER"`
	LearnerTimeout     time.Duration `name:"learner-timeout" help:"The leader's etcdbr removes a learner that made no progress (never started, or stopped catching up) for this long, so that its member tries again; longer than etcd needs to send the db to a new member." default:"10m" env:"ETCDBR_LEARNER_TIMEOUT"`
}

// config checks the cluster flags and returns the supervisor's configuration of them.
func (f ClusterFlags) config(etcdCfg *embed.Config) (supervisor.ClusterConfig, error) {
	c := supervisor.ClusterConfig{
		Explicit:       len(f.ClusterEndpoints) > 0,
		CertFile:       f.ClusterCert,
		KeyFile:        f.ClusterKey,
		CAFile:         f.ClusterCA,
		LearnerTimeout: f.LearnerTimeout,
		TendLearners:   true,
	}
	switch {
	case (f.ClusterCert == "") != (f.ClusterKey == ""):
		return c, usageErrorf("--cluster-cert and --cluster-key go together: give both, or neither (etcd's --cert-file and --key-file are used)")
	case f.LearnerTimeout < 0:
		return c, usageErrorf("--learner-timeout %v: give a positive duration", f.LearnerTimeout)
	}
	eps, err := supervisor.ClusterEndpoints(etcdCfg, f.ClusterEndpoints)
	if err != nil {
		return c, usageError{err}
	}
	c.Endpoints = eps
	return c, nil
}

// APIFlags configure the HTTP API (health, status, metrics, snapshots and restores on request).
type APIFlags struct {
	ListenAPI            string   `name:"listen-api" help:"Address (host:port) of the HTTP API and /metrics; \"\" disables it. Not loopback: needs --api-cert, --api-key and --api-client-ca or --api-token-file." default:"127.0.0.1:2378" env:"ETCDBR_LISTEN_API"`
	APICert              string   `name:"api-cert" help:"TLS certificate (PEM) of the HTTP API." env:"ETCDBR_API_CERT" type:"path"`
	APIKey               string   `name:"api-key" help:"TLS key (PEM) of the HTTP API." env:"ETCDBR_API_KEY" type:"path"`
	APIClientCA          string   `name:"api-client-ca" help:"CA certificates (PEM): clients with a certificate they signed may use every endpoint." env:"ETCDBR_API_CLIENT_CA" type:"path"`
	APITokenFile         string   `name:"api-token-file" help:"File whose first line is a bearer token that may use every endpoint (at least 16 bytes)." env:"ETCDBR_API_TOKEN_FILE" type:"path"`
	APIReadOnlyTokenFile string   `name:"api-read-only-token-file" help:"File whose first line is a bearer token that may use the GET endpoints only." env:"ETCDBR_API_READ_ONLY_TOKEN_FILE" type:"path"`
	APIAllowedHosts      []string `name:"api-allowed-hosts" placeholder:"HOST[:PORT],..." help:"Names clients may send in the Host header besides localhost, 127.0.0.1, [::1] and the --listen-api address (a DNS name of this machine, a proxy's name); any other Host is refused (DNS rebinding). Without a port, any port." env:"ETCDBR_API_ALLOWED_HOSTS" sep:","`
}

// config returns the API configuration, checked, its files (tokens, certificates) read.
func (f APIFlags) config() (supervisor.APIConfig, error) {
	c := supervisor.APIConfig{
		Listen:            f.ListenAPI,
		CertFile:          f.APICert,
		KeyFile:           f.APIKey,
		ClientCAFile:      f.APIClientCA,
		TokenFile:         f.APITokenFile,
		ReadOnlyTokenFile: f.APIReadOnlyTokenFile,
		AllowedHosts:      f.APIAllowedHosts,
	}
	if err := c.Validate(); err != nil {
		return c, usageError{err}
	}
	if err := c.CheckFiles(); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

// Run runs the member until a signal stops it.
func (c *RunCmd) Run(ctx context.Context, env *Env) error {
	etcdCfg, err := etcdConfig(env, c.EtcdArgs, c.DataDir)
	if err != nil {
		return err
	}
	// gRPC logs through one logger per process, set before gRPC is first used: etcd's.
	if gl := embedded.GRPCLogger(etcdCfg); gl != nil {
		grpclog.SetLoggerV2(gl)
	}
	sched, err := backup.ParseSchedule(c.FullSnapshotSchedule)
	if err != nil {
		return usageError{fmt.Errorf("--full-snapshot-schedule: %w", err)}
	}
	if err := c.DeltaFlags.validate(); err != nil {
		return err
	}
	switch {
	case c.MaxBackupAge < 0:
		return usageErrorf("--max-backup-age %v: give a positive duration, or 0 for the default", c.MaxBackupAge)
	case c.MaxBackupAge > 0 && c.MaxBackupAge < 2*c.DeltaSnapshotPeriod:
		return usageErrorf("--max-backup-age %v is shorter than two delta periods (--delta-snapshot-period %v): "+
			"readiness would fail between deltas; give at least %v", c.MaxBackupAge, c.DeltaSnapshotPeriod, 2*c.DeltaSnapshotPeriod)
	}
	api, err := c.APIFlags.config()
	if err != nil {
		return err
	}
	depth, err := datadir.ParseDepth(c.Validation)
	if err != nil {
		return usageError{fmt.Errorf("--validation: %w", err)}
	}
	if c.StoreTakeoverAfter < 0 || (c.StoreTakeoverAfter > 0 && c.StoreTakeoverAfter < supervisor.MinTakeoverAfter) {
		return usageErrorf("--store-takeover-after %v: use at least %v, or 0 to never let a new machine take the store over", c.StoreTakeoverAfter, supervisor.MinTakeoverAfter)
	}
	if c.KeepOldDataDirs < 1 {
		return usageErrorf("--keep-old-data-dirs %d: keep at least 1 (the newest old data dir is the last copy before a restore)", c.KeepOldDataDirs)
	}
	gcPolicy, gcPeriod, gcEnabled, err := c.GCFlags.config()
	if err != nil {
		return err
	}
	cluster, err := c.ClusterFlags.config(etcdCfg)
	if err != nil {
		return err
	}
	compact, err := c.CompactFlags.config()
	if err != nil {
		return err
	}
	defrag, err := c.DefragFlags.config()
	if err != nil {
		return err
	}
	// Every flag is checked before the store is opened: opening a file store creates its
	// directory, and a usage error must leave nothing behind.
	if c.Store == "" {
		c.Store = defaultStoreURL(env.Log, etcdCfg.Dir)
	}
	var restoreFrom *snapstore.Store // opened first: it creates nothing
	if c.RestoreFrom != "" {
		if restoreFrom, err = c.openURL(ctx, "--restore-from", c.RestoreFrom, env.Log, true); err != nil {
			return err
		}
		defer restoreFrom.Close()
	}
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	var gc *catalog.Policy
	if gcEnabled {
		gc = &gcPolicy
	}
	return supervisor.Run(ctx, supervisor.Config{
		GC:                 gc,
		GCPeriod:           gcPeriod,
		Compact:            compact,
		Defrag:             defrag,
		Validation:         depth,
		ForceRestore:       c.ForceRestore,
		KeepOldDataDirs:    c.KeepOldDataDirs,
		UnbackedRevisions:  c.UnbackedRevisions,
		Etcd:               etcdCfg,
		Store:              store,
		RestoreFrom:        restoreFrom,
		Schedule:           sched,
		DeltaPeriod:        c.DeltaSnapshotPeriod,
		DeltaMemoryLimit:   int64(c.DeltaSnapshotMemoryLimit),
		MaxBackupAge:       c.MaxBackupAge,
		RestoreOnCorrupt:   c.RestoreOnCorrupt,
		API:                api,
		Cluster:            cluster,
		ClusterRestorePoll: c.ClusterRestorePoll,
		AutoRestoreAfter:   c.AutoRestoreAfter,
		TakeoverAfter:      c.StoreTakeoverAfter,
		Log:                env.Log,
	})
}

// CompactFlags configure the compaction of the backup chain in run (docs/compaction.md).
type CompactFlags struct {
	CompactAfterRevisions int64         `name:"compact-after-revisions" placeholder:"N" help:"Compact the backup chain (build a full snapshot at its end from the newest full snapshot and its deltas, at low priority, on the leader) once a restore of the newest point would replay this many revisions (about 5s of replay per million on 2 cores; 0: no bound on revisions)." default:"1000000" env:"ETCDBR_COMPACT_AFTER_REVISIONS"`
	CompactAfterBytes     byteSize      `name:"compact-after-bytes" placeholder:"SIZE" help:"Also compact once the deltas after the newest full snapshot hold this much as stored, in bytes or with a unit (0: no bound on size)." default:"1GiB" env:"ETCDBR_COMPACT_AFTER_BYTES"`
	CompactPeriod         time.Duration `name:"compact-period" help:"How often the chain is checked against the bounds (one listing of the store; at least 1s; 0 disables compaction)." default:"1m" env:"ETCDBR_COMPACT_PERIOD"`
	CompactSpoolDir       string        `name:"compact-spool-dir" help:"Where compacted dbs are built: room for the db (default: <data-dir>.etcdbr-compact, beside the data dir)." env:"ETCDBR_COMPACT_SPOOL_DIR" type:"path"`
}

// config returns the compaction's configuration, nil when it is off.
func (f CompactFlags) config() (*supervisor.CompactConfig, error) {
	switch {
	case f.CompactPeriod < 0 || (f.CompactPeriod > 0 && f.CompactPeriod < time.Second):
		return nil, usageErrorf("--compact-period %v: use at least 1s, or 0 to disable compaction", f.CompactPeriod)
	case f.CompactAfterRevisions < 0:
		return nil, usageErrorf("--compact-after-revisions %d: give 0 (no bound) or more", f.CompactAfterRevisions)
	case f.CompactAfterBytes < 0:
		return nil, usageErrorf("--compact-after-bytes %v: give 0 (no bound) or more", f.CompactAfterBytes)
	}
	bound := catalog.CompactBound{Revisions: f.CompactAfterRevisions, Bytes: int64(f.CompactAfterBytes)}
	if f.CompactPeriod == 0 || bound.Off() {
		return nil, nil
	}
	return &supervisor.CompactConfig{Bound: bound, Period: f.CompactPeriod, SpoolDir: f.CompactSpoolDir}, nil
}

// DeltaFlags are the delta snapshot flags of run and snapshot.
type DeltaFlags struct {
	DeltaSnapshotPeriod      time.Duration `help:"How often the writes since the last delta snapshot are uploaded as one (at least 1s; 0 disables delta snapshots)." default:"10s" env:"ETCDBR_DELTA_SNAPSHOT_PERIOD"`
	DeltaSnapshotMemoryLimit byteSize      `help:"Memory for writes not yet uploaded, in bytes or with a unit (KiB, MiB, GiB, KB, MB, GB); a delta is uploaded early when half of it is used." default:"64MiB" env:"ETCDBR_DELTA_SNAPSHOT_MEMORY_LIMIT"`
}

// validate checks the delta flags' values.
func (f DeltaFlags) validate() error {
	if f.DeltaSnapshotPeriod < 0 || (f.DeltaSnapshotPeriod > 0 && f.DeltaSnapshotPeriod < time.Second) {
		return usageErrorf("--delta-snapshot-period %v: use at least 1s, or 0 to disable delta snapshots", f.DeltaSnapshotPeriod)
	}
	if f.DeltaSnapshotMemoryLimit < 1<<20 {
		return usageErrorf("--delta-snapshot-memory-limit %v: use at least 1MiB", f.DeltaSnapshotMemoryLimit)
	}
	return nil
}

// byteSize is a size in bytes that parses units: 64MiB, 512KiB, 1GiB, 100MB, 4096.
type byteSize int64

// byteUnit returns the bytes of a size unit (lower case).
func byteUnit(unit string) (int64, bool) {
	switch unit {
	case "", "b":
		return 1, true
	case "k", "kb":
		return 1e3, true
	case "ki", "kib":
		return 1 << 10, true
	case "m", "mb":
		return 1e6, true
	case "mi", "mib":
		return 1 << 20, true
	case "g", "gb":
		return 1e9, true
	case "gi", "gib":
		return 1 << 30, true
	}
	return 0, false
}

// UnmarshalText parses a size.
func (b *byteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	unit, ok := byteUnit(strings.ToLower(strings.TrimSpace(s[i:])))
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if !ok || err != nil || i == 0 || n > math.MaxInt64/unit {
		return fmt.Errorf("invalid size %q: use bytes or a number with a unit (KiB, MiB, GiB, KB, MB, GB), e.g. 64MiB", s)
	}
	*b = byteSize(n * unit)
	return nil
}

// String formats the size in the largest binary unit that divides it.
func (b byteSize) String() string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.size == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.size, u.name)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// etcdConfig parses etcd's flags (and ETCD_* variables) and applies etcdbr's --data-dir.
func etcdConfig(env *Env, args []string, dataDir string) (*embed.Config, error) {
	cfg, err := embedded.ParseFlagsWith(args, embedded.ParseOptions{DataDir: dataDir, Log: env.EtcdLog})
	switch {
	case errors.Is(err, flag.ErrHelp):
		if err := printEtcdHelp(env); err != nil {
			return nil, err
		}
		return nil, errHelpShown
	case errors.Is(err, embedded.ErrVersion):
		printEtcdVersion(env.Stdout)
		return nil, errHelpShown
	case err != nil:
		return nil, usageError{err}
	}
	if dataDir != "" {
		if cfg.FlagsExplicitlySet["data-dir"] && filepath.Clean(cfg.Dir) != filepath.Clean(dataDir) {
			return nil, usageErrorf("--data-dir %q and etcd's --data-dir %q differ: give it once", dataDir, cfg.Dir)
		}
		cfg.Dir = dataDir
	}
	if cfg.Dir == "" {
		cfg.Dir = cfg.Name + ".etcd"
	}
	if abs, err := filepath.Abs(cfg.Dir); err == nil {
		cfg.Dir = abs
	}
	return cfg, nil
}
