package kube

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiserver is a kube-apiserver on loopback that stores in an etcd member, with a static
// admin token (group system:masters) and RBAC.
type apiserver struct {
	proc   *process
	url    string
	token  string
	config *rest.Config
	client kubernetes.Interface
}

// startAPIServer starts kube-apiserver on etcdURL, with its files in dir, and waits until
// /readyz passes.
func startAPIServer(ctx context.Context, t *testing.T, dir, etcdURL string) *apiserver {
	t.Helper()
	dir = filepath.Join(dir, "kube-apiserver")
	token, args, err := apiserverFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	args = append(args,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--etcd-servers="+etcdURL,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		// Only configuration: nothing is ever sent to these addresses.
		"--service-cluster-ip-range=10.0.0.0/24",
		"--cert-dir="+filepath.Join(dir, "certs"),
	)
	start := time.Now()
	a := &apiserver{
		proc:  startProcess(t, filepath.Dir(dir), "kube-apiserver", apiserverBin, args...),
		url:   url,
		token: token,
		config: &rest.Config{
			Host:            url,
			BearerToken:     token,
			TLSClientConfig: rest.TLSClientConfig{Insecure: true},
			QPS:             200,
			Burst:           400,
			Timeout:         30 * time.Second,
		},
	}
	if err := a.waitReady(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver ready in %v at %s", time.Since(start).Round(time.Millisecond), url)
	if a.client, err = kubernetes.NewForConfig(a.config); err != nil {
		t.Fatalf("client of kube-apiserver: %v", err)
	}
	return a
}

// apiserverFiles writes the token file and the service-account key into dir and returns
// the admin token and the flags that name the files.
func apiserverFiles(dir string) (string, []string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("kube-apiserver files: %w", err)
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return "", nil, fmt.Errorf("kube-apiserver token: %w", err)
	}
	token := hex.EncodeToString(secret)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return "", nil, fmt.Errorf("kube-apiserver token file: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, fmt.Errorf("service-account key: %w", err)
	}
	keyFile := filepath.Join(dir, "sa.key")
	block := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, block, 0o600); err != nil {
		return "", nil, fmt.Errorf("service-account key: %w", err)
	}
	return token, []string{
		"--token-auth-file=" + tokens,
		"--service-account-key-file=" + keyFile,
		"--service-account-signing-key-file=" + keyFile,
	}, nil
}

// waitReady polls /readyz until it answers 200, the process exits or timeout passes.
func (a *apiserver) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer client.CloseIdleConnections()
	_, err := poll(ctx, timeout, func(ctx context.Context) error {
		if done, err := a.proc.exited(); done {
			return fmt.Errorf("kube-apiserver exited: %v", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz answered %d: %s", resp.StatusCode, body)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver is not ready: %w", err)
	}
	return nil
}
