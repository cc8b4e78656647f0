package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/backup"
)

// SnapshotCmd is `etcdbr snapshot`: one full snapshot of an external etcd.
type SnapshotCmd struct {
	StoreFlags  `embed:""`
	Endpoints   []string      `help:"etcd client URLs." default:"http://127.0.0.1:2379" env:"ETCDBR_ENDPOINTS" sep:","`
	Cacert      string        `help:"CA bundle to verify the etcd server's certificate." env:"ETCDBR_CACERT" type:"existingfile"`
	Cert        string        `help:"Client certificate." env:"ETCDBR_CERT" type:"existingfile"`
	Key         string        `help:"Client key." env:"ETCDBR_KEY" type:"existingfile"`
	Insecure    bool          `help:"Skip verification of the server's certificate (testing only)." env:"ETCDBR_INSECURE_SKIP_TLS_VERIFY" name:"insecure-skip-tls-verify"`
	User        string        `help:"etcd user name (USER or USER:PASSWORD) for a cluster with auth enabled." env:"ETCDBR_USER"`
	DialTimeout time.Duration `help:"Timeout to connect to etcd." default:"10s" env:"ETCDBR_DIAL_TIMEOUT"`
	SpoolDir    string        `help:"Directory for the snapshot while it is verified (needs room for the whole db)." env:"ETCDBR_SPOOL_DIR" type:"path"`
}

// Run takes the snapshot.
func (c *SnapshotCmd) Run(ctx context.Context, env *Env) error {
	cli, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	spool := c.SpoolDir
	if spool == "" {
		spool = os.TempDir()
	}
	start := time.Now()
	snap, err := backup.FullFromClient(ctx, cli, store, spool)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	env.Log.Info("full snapshot taken", "object", snap.Key, "revision", snap.Revision, "bytes", snap.Size,
		"duration", time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(env.Stdout, snap.Key)
	return nil
}

// client connects to the external etcd and checks that it answers.
func (c *SnapshotCmd) client(ctx context.Context) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		Logger:      zap.NewNop(),
	}
	if c.Cacert != "" || c.Cert != "" || c.Key != "" || c.Insecure {
		if (c.Cert == "") != (c.Key == "") {
			return nil, usageErrorf("--cert and --key go together: give both or neither")
		}
		info := transport.TLSInfo{TrustedCAFile: c.Cacert, CertFile: c.Cert, KeyFile: c.Key, InsecureSkipVerify: c.Insecure}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, usageErrorf("TLS configuration: %v", err)
		}
		cfg.TLS = tlsCfg
	} else {
		for _, ep := range c.Endpoints {
			if strings.HasPrefix(ep, "https://") {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
				break
			}
		}
	}
	if c.User != "" {
		user, pass, _ := strings.Cut(c.User, ":")
		cfg.Username, cfg.Password = user, pass
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	if _, err := cli.Status(sctx, c.Endpoints[0]); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd at %s does not answer: %w; check --endpoints and the TLS flags", c.Endpoints[0], err)
	}
	return cli, nil
}
