package embedded

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/pkg/v3/flags"
	cconfig "go.etcd.io/etcd/server/v3/config"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

var (
	// ErrHelp is returned by ParseFlags for -h, -help or --help. It wraps
	// flag.ErrHelp; Usage returns the text to show.
	ErrHelp = fmt.Errorf("etcd help requested: %w", flag.ErrHelp)
	// ErrVersion is returned by ParseFlags for --version; Version returns the
	// text etcd prints.
	ErrVersion = errors.New("etcd version requested")
	// ErrUnknownFlag is wrapped by the error ParseFlags returns for a flag etcd
	// does not know.
	ErrUnknownFlag = errors.New("unknown etcd flag")
)

// envPrefix is the prefix of etcd's environment variables (ETCD_NAME for --name).
const envPrefix = "ETCD"

// Version returns what `etcd --version` prints for the etcd compiled in.
func Version() string {
	return fmt.Sprintf("etcd Version: %s\nGit SHA: %s\nGo Version: %s\nGo OS/Arch: %s/%s\n",
		version.Version, version.GitSHA, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// ParseFlags builds an etcd configuration from etcd's command line exactly as the
// etcd 3.6 binary does:
//
//   - every flag etcd 3.6 accepts (embed.Config.AddFlags plus --config-file,
//     --initial-cluster-state, --discovery-fallback, --v2-deprecation, --version
//     and the flags etcd ignores);
//   - ETCD_* environment variables for the flags not given on the command line
//     (ETCD_VERSION is ignored, as etcd does). Like etcd, a variable for a flag
//     that is also on the command line is refused: etcd exits with "conflicting
//     environment variable is shadowed by corresponding command-line flag";
//   - --config-file (or ETCD_CONFIG_FILE) loads etcd's YAML file with
//     embed.ConfigFromFile, and then, as in etcd, every other flag and every
//     ETCD_* variable is ignored (they are still parsed, so unknown flags,
//     --help and --version behave the same);
//   - list and URL flags copied into the config, --advertise-client-urls cleared
//     when --listen-client-urls is set without it (so Validate reports
//     embed.ErrUnsetAdvertiseClientURLsFlag), the default --initial-cluster
//     dropped when discovery is used, experimental booleans mapped to feature
//     gates, FlagsExplicitlySet filled, cfg.Validate() run, the deprecated
//     --experimental-* values copied to their new fields;
//   - what etcd's main does after parsing: --initial-cluster derived from
//     --name when only the name was given (UpdateDefaultClusterFromName) and the
//     data dir defaulted to "<name>.etcd".
//
// It returns ErrHelp for -h/--help, ErrVersion for --version and, for a flag etcd
// does not know, an error wrapping ErrUnknownFlag that names it.
//
// ParseFlags sets etcd's process-wide raft connection timeouts
// (--raft-read-timeout, --raft-write-timeout) as etcd does, so call it before
// starting etcd, not while one is running in the process.
func ParseFlags(args []string) (*embed.Config, error) {
	return ParseFlagsWith(args, ParseOptions{})
}

// ParseOptions are what ParseFlagsWith adds to etcd's own parsing.
type ParseOptions struct {
	// DataDir is the data dir when etcd's flags, variables and config file name
	// none, instead of etcd's "<name>.etcd" (which etcd warns about): the data
	// dir the caller got by other means.
	DataDir string
	// Log, when not nil, receives etcd's logs from the start of the parsing on,
	// as LogTo sets up.
	Log slog.Handler
}

// ParseFlagsWith is ParseFlags with opts.
func ParseFlagsWith(args []string, opts ParseOptions) (*embed.Config, error) {
	rafthttpMu.Lock()
	defer rafthttpMu.Unlock()
	return parseFlags(args, os.Environ(), opts)
}

func parseFlags(args, environ []string, opts ParseOptions) (*embed.Config, error) {
	ef := newEtcdFlagSet()
	defaultInitialCluster := ef.cfg.InitialCluster

	if err := ef.fs.Parse(args); err != nil {
		return nil, flagParseError(err)
	}
	if ef.fs.NArg() != 0 {
		return nil, fmt.Errorf("%q is not a valid etcd flag: etcdbr passes everything after `--` to etcd; see etcd --help", ef.fs.Arg(0))
	}
	if ef.printVersion {
		return nil, ErrVersion
	}

	env := envMap(environ)
	if ef.configFile == "" {
		// Read separately: it decides whether the other variables count at all.
		ef.configFile = env[flags.FlagToEnv(envPrefix, "config-file")]
	}

	var cfg *embed.Config
	if ef.configFile != "" {
		fcfg, err := configFromFile(ef.configFile, opts.Log)
		if err != nil {
			return nil, err
		}
		cfg = fcfg
		if lg := cfg.GetLogger(); lg != nil {
			lg.Info("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided",
				zap.String("path", ef.configFile))
		}
	} else {
		if err := ef.configFromCmdLine(env, opts.Log); err != nil {
			return nil, err
		}
		cfg = ef.cfg
	}

	applyDeprecatedExperimental(cfg)

	// --v2-deprecation can only keep the default or write-only-skip-check.
	if cfg.V2Deprecation != cconfig.V2Depr1WriteOnlySkipCheck {
		cfg.V2Deprecation = cconfig.V2DeprDefault
	}

	d, err := warningUnaryRequestDuration(cfg)
	if err != nil {
		return nil, err
	}
	cfg.WarningUnaryRequestDuration = d

	lg := cfg.GetLogger()
	if lg != nil {
		for name := range cfg.FlagsExplicitlySet {
			if msg, ok := deprecatedFlags[name]; ok {
				lg.Warn(msg)
			}
		}
	}

	// What etcd's main does with the parsed configuration before starting.
	defaultHost, dhErr := cfg.UpdateDefaultClusterFromName(defaultInitialCluster)
	if lg != nil {
		if defaultHost != "" {
			lg.Info("detected default host for advertise", zap.String("host", defaultHost))
		}
		if dhErr != nil {
			lg.Info("failed to detect default host", zap.Error(dhErr))
		}
	}
	if cfg.Dir == "" && opts.DataDir != "" {
		cfg.Dir = opts.DataDir
	}
	if cfg.Dir == "" {
		cfg.Dir = fmt.Sprintf("%v.etcd", cfg.Name)
		if lg != nil {
			lg.Warn("'data-dir' was empty; using default", zap.String("data-dir", cfg.Dir))
		}
	}
	return cfg, nil
}

// flagParseError turns a flag package error into ours.
func flagParseError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return ErrHelp
	}
	const undefined = "flag provided but not defined: "
	if msg := err.Error(); strings.HasPrefix(msg, undefined) {
		name := strings.TrimLeft(strings.TrimPrefix(msg, undefined), "-")
		return fmt.Errorf("%w --%s: etcdbr passes everything after `--` to etcd; see etcd --help", ErrUnknownFlag, name)
	}
	return fmt.Errorf("invalid etcd flags: %w", err)
}

// configFromCmdLine is etcdmain's configFromCmdLine without its side effects on
// the process environment and without exiting; etcd logs to log when it is not
// nil (LogTo).
func (ef *etcdFlagSet) configFromCmdLine(env map[string]string, log slog.Handler) error {
	fs, cfg := ef.fs, ef.cfg

	unrecognized, err := setFlagsFromEnv(fs, env)
	if err != nil {
		return err
	}

	if rafthttp.ConnReadTimeout < rafthttp.DefaultConnReadTimeout {
		rafthttp.ConnReadTimeout = rafthttp.DefaultConnReadTimeout
	}
	if rafthttp.ConnWriteTimeout < rafthttp.DefaultConnWriteTimeout {
		rafthttp.ConnWriteTimeout = rafthttp.DefaultConnWriteTimeout
	}

	cfg.ListenPeerUrls = flags.UniqueURLsFromFlag(fs, "listen-peer-urls")
	cfg.AdvertisePeerUrls = flags.UniqueURLsFromFlag(fs, "initial-advertise-peer-urls")
	cfg.ListenClientUrls = flags.UniqueURLsFromFlag(fs, "listen-client-urls")
	cfg.ListenClientHttpUrls = flags.UniqueURLsFromFlag(fs, "listen-client-http-urls")
	cfg.AdvertiseClientUrls = flags.UniqueURLsFromFlag(fs, "advertise-client-urls")
	cfg.ListenMetricsUrls = flags.UniqueURLsFromFlag(fs, "listen-metrics-urls")
	cfg.DiscoveryCfg.Endpoints = flags.UniqueStringsFromFlag(fs, "discovery-endpoints")
	cfg.CORS = flags.UniqueURLsMapFromFlag(fs, "cors")
	cfg.HostWhitelist = flags.UniqueStringsMapFromFlag(fs, "host-whitelist")
	cfg.ClientTLSInfo.AllowedHostnames = flags.StringsFromFlag(fs, "client-cert-allowed-hostname")
	cfg.PeerTLSInfo.AllowedCNs = flags.StringsFromFlag(fs, "peer-cert-allowed-cn")
	cfg.PeerTLSInfo.AllowedHostnames = flags.StringsFromFlag(fs, "peer-cert-allowed-hostname")
	cfg.CipherSuites = flags.StringsFromFlag(fs, "cipher-suites")
	cfg.MaxConcurrentStreams = flags.Uint32FromFlag(fs, "max-concurrent-streams")
	cfg.LogOutputs = flags.UniqueStringsFromFlag(fs, "log-outputs")
	cfg.ClusterState = ef.clusterState.String()
	cfg.V2Deprecation = cconfig.V2DeprecationEnum(ef.v2deprecation.String())

	// etcd does not advertise its default client URL when the listen URLs were
	// changed; Validate then asks for --advertise-client-urls.
	if flags.IsSet(fs, "listen-client-urls") && !flags.IsSet(fs, "advertise-client-urls") {
		cfg.AdvertiseClientUrls = nil
	}
	// The default --initial-cluster does not apply when discovery is used.
	if (cfg.Durl != "" || cfg.DNSCluster != "" || cfg.DNSClusterServiceName != "" || len(cfg.DiscoveryCfg.Endpoints) > 0) &&
		!flags.IsSet(fs, "initial-cluster") {
		cfg.InitialCluster = ""
	}

	fs.Visit(func(f *flag.Flag) {
		cfg.FlagsExplicitlySet[f.Name] = true
	})

	var boolErr error
	getBoolFlagVal := func(name string) *bool {
		if !flags.IsSet(fs, name) {
			return nil
		}
		v, err := strconv.ParseBool(fs.Lookup(name).Value.String())
		if err != nil {
			boolErr = errors.Join(boolErr, fmt.Errorf("invalid value for --%s: %w", name, err))
			return nil
		}
		return &v
	}
	err = embed.SetFeatureGatesFromExperimentalFlags(cfg.ServerFeatureGate, getBoolFlagVal,
		fs.Lookup(embed.ServerFeatureGateFlagName).Value.String())
	if err = errors.Join(boolErr, err); err != nil {
		return fmt.Errorf("invalid etcd feature gates: %w", err)
	}

	if ef.fallback.String() == fallbackProxy {
		return fmt.Errorf("invalid etcd configuration: v2 proxy is deprecated, and --discovery-fallback can't be configured as %q", fallbackProxy)
	}
	if log != nil {
		LogTo(cfg, log) // before Validate, which builds etcd's logger
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid etcd configuration: %w", err)
	}

	if lg := cfg.GetLogger(); lg != nil {
		for _, name := range unrecognized {
			lg.Warn("unrecognized environment variable", zap.String("environment-variable", name))
		}
	}
	return nil
}

// applyDeprecatedExperimental copies the values of the deprecated
// --experimental-* flags that were set to their replacement fields, as etcd 3.6 does.
func applyDeprecatedExperimental(cfg *embed.Config) {
	set := cfg.FlagsExplicitlySet
	if set["experimental-compact-hash-check-time"] {
		cfg.CompactHashCheckTime = cfg.ExperimentalCompactHashCheckTime
	}
	if set["experimental-corrupt-check-time"] {
		cfg.CorruptCheckTime = cfg.ExperimentalCorruptCheckTime
	}
	if set["experimental-compaction-batch-limit"] {
		cfg.CompactionBatchLimit = cfg.ExperimentalCompactionBatchLimit
	}
	if set["experimental-watch-progress-notify-interval"] {
		cfg.WatchProgressNotifyInterval = cfg.ExperimentalWatchProgressNotifyInterval
	}
	if set["experimental-warning-apply-duration"] {
		cfg.WarningApplyDuration = cfg.ExperimentalWarningApplyDuration
	}
	if set["experimental-bootstrap-defrag-threshold-megabytes"] {
		cfg.BootstrapDefragThresholdMegabytes = cfg.ExperimentalBootstrapDefragThresholdMegabytes
	}
	if set["experimental-peer-skip-client-san-verification"] {
		cfg.PeerTLSInfo.SkipClientSANVerify = cfg.ExperimentalPeerSkipClientSanVerification
	}
	if set["experimental-memory-mlock"] {
		cfg.MemoryMlock = cfg.ExperimentalMemoryMlock
	}
	if set["experimental-snapshot-catchup-entries"] {
		cfg.SnapshotCatchUpEntries = cfg.ExperimentalSnapshotCatchUpEntries
	}
	if set["experimental-compaction-sleep-interval"] {
		cfg.CompactionSleepInterval = cfg.ExperimentalCompactionSleepInterval
	}
	if set["experimental-downgrade-check-time"] {
		cfg.DowngradeCheckTime = cfg.ExperimentalDowngradeCheckTime
	}
	if set["experimental-enable-distributed-tracing"] {
		cfg.EnableDistributedTracing = cfg.ExperimentalEnableDistributedTracing
	}
	if set["experimental-distributed-tracing-address"] {
		cfg.DistributedTracingAddress = cfg.ExperimentalDistributedTracingAddress
	}
	if set["experimental-distributed-tracing-service-name"] {
		cfg.DistributedTracingServiceName = cfg.ExperimentalDistributedTracingServiceName
	}
	if set["experimental-distributed-tracing-instance-id"] {
		cfg.DistributedTracingServiceInstanceID = cfg.ExperimentalDistributedTracingServiceInstanceID
	}
	if set["experimental-distributed-tracing-sampling-rate"] {
		cfg.DistributedTracingSamplingRatePerMillion = cfg.ExperimentalDistributedTracingSamplingRatePerMillion
	}
}

// warningUnaryRequestDuration resolves --warning-unary-request-duration and its
// deprecated experimental twin as etcd does.
func warningUnaryRequestDuration(cfg *embed.Config) (time.Duration, error) {
	if cfg.ExperimentalWarningUnaryRequestDuration != 0 && cfg.WarningUnaryRequestDuration != 0 {
		return 0, errors.New("invalid etcd configuration: both --experimental-warning-unary-request-duration and " +
			"--warning-unary-request-duration flags are set. Use only --warning-unary-request-duration")
	}
	if cfg.WarningUnaryRequestDuration != 0 {
		return cfg.WarningUnaryRequestDuration, nil
	}
	if cfg.ExperimentalWarningUnaryRequestDuration != 0 {
		if lg := cfg.GetLogger(); lg != nil {
			lg.Warn("--experimental-warning-unary-request-duration is deprecated, and will be decommissioned in v3.7. " +
				"Use --warning-unary-request-duration instead.")
		}
		return cfg.ExperimentalWarningUnaryRequestDuration, nil
	}
	return embed.DefaultWarningUnaryRequestDuration, nil
}
