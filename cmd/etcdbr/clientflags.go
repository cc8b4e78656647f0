package main

import (
	"crypto/tls"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdClientFlags are how a command connects to a running etcd as a client (its endpoints
// are the command's own flag: their default differs).
type EtcdClientFlags struct {
	Cacert      string        `help:"CA bundle to verify the etcd server's certificate." env:"ETCDBR_CACERT" type:"existingfile"`
	Cert        string        `help:"Client certificate." env:"ETCDBR_CERT" type:"existingfile"`
	Key         string        `help:"Client key." env:"ETCDBR_KEY" type:"existingfile"`
	Insecure    bool          `help:"Skip verification of the server's certificate (testing only)." env:"ETCDBR_INSECURE_SKIP_TLS_VERIFY" name:"insecure-skip-tls-verify"`
	User        string        `help:"etcd user name (USER or USER:PASSWORD) for a cluster with auth enabled." env:"ETCDBR_USER"`
	DialTimeout time.Duration `help:"Timeout to connect to etcd." default:"10s" env:"ETCDBR_DIAL_TIMEOUT"`
}

// config is the configuration of a client of the etcd at endpoints.
func (c *EtcdClientFlags) config(endpoints []string) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: c.DialTimeout,
	}
	if c.Cacert != "" || c.Cert != "" || c.Key != "" || c.Insecure {
		if (c.Cert == "") != (c.Key == "") {
			return cfg, usageErrorf("--cert and --key go together: give both or neither")
		}
		info := transport.TLSInfo{TrustedCAFile: c.Cacert, CertFile: c.Cert, KeyFile: c.Key, InsecureSkipVerify: c.Insecure}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return cfg, usageErrorf("TLS configuration: %v", err)
		}
		cfg.TLS = tlsCfg
	} else {
		for _, ep := range endpoints {
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
	return cfg, nil
}
