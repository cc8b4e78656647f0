package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// deployDir holds the Kubernetes manifests an operator applies (deploy/kubernetes).
var deployDir = filepath.Join("..", "..", "deploy", "kubernetes")

// deployManifests are the manifests and the kinds of their objects, in order. A file in
// deploy/kubernetes that is not listed here fails the test, so that every manifest is
// checked.
var deployManifests = map[string][]string{
	"etcd-static-pod.yaml":         {"Pod"},
	"etcd-static-pod-stacked.yaml": {"Pod"},
	"etcd-statefulset.yaml":        {"Service", "Service", "StatefulSet"},
	"etcd-backup-sidecar.yaml":     {"Deployment"},
}

// readManifest returns the objects of a multi-document YAML manifest.
func readManifest(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue // an empty document
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// dryRunner creates objects in kube-apiserver with dryRun=All and strict field
// validation: everything a real create does (defaulting, validation, admission), nothing
// stored. Objects without a namespace go into namespace.
type dryRunner struct {
	client    dynamic.Interface
	mapper    meta.RESTMapper
	namespace string
}

func (d dryRunner) create(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict}
	res := d.client.Resource(mapping.Resource)
	if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
		_, err = res.Create(ctx, obj, opts)
		return err
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = d.namespace
	}
	_, err = res.Namespace(ns).Create(ctx, obj, opts)
	return err
}

// TestDeployManifests creates every object of deploy/kubernetes in a real kube-apiserver
// with server-side dry run and expects each accepted; the static pod manifests are
// created as Pods in kube-system, where the kubelet's mirror pods live. Broken copies of a
// manifest must be refused, so that the check is known to catch mistakes.
func TestDeployManifests(t *testing.T) {
	needBinaries(t)
	ctx := context.Background()
	c := startCluster(ctx, t)
	cs := c.kube.client

	const ns = "deploy-test"
	if _, err := createNamespace(ctx, cs, ns); err != nil {
		t.Fatal(err)
	}
	// Pods need their service account; the controller manager, which would create the
	// default ones, does not run here.
	for _, n := range []string{ns, "kube-system"} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		if _, err := cs.CoreV1().ServiceAccounts(n).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create service account %s/default: %v", n, err)
		}
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.kube.config)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dynamic.NewForConfig(c.kube.config)
	if err != nil {
		t.Fatal(err)
	}
	d := dryRunner{
		client:    client,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		namespace: ns,
	}

	entries, err := os.ReadDir(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		seen = append(seen, e.Name())
		want, ok := deployManifests[e.Name()]
		if !ok {
			t.Errorf("%s: not in deployManifests: list its kinds there so that it is checked", e.Name())
			continue
		}
		data, err := os.ReadFile(filepath.Join(deployDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := readManifest(data)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		var kinds []string
		for _, obj := range objs {
			kinds = append(kinds, obj.GetKind())
			if err := d.create(ctx, obj); err != nil {
				t.Errorf("%s: %s %s refused: %v", e.Name(), obj.GetKind(), obj.GetName(), err)
			}
		}
		if !slices.Equal(kinds, want) {
			t.Errorf("%s holds %v, want %v", e.Name(), kinds, want)
		}
	}
	for name := range deployManifests {
		if !slices.Contains(seen, name) {
			t.Errorf("%s is missing from %s", name, deployDir)
		}
	}

	// The same check refuses a broken manifest: a misspelt field (strict validation) and
	// a value out of range (the API server's validation).
	data, err := os.ReadFile(filepath.Join(deployDir, "etcd-static-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, broken := range []struct{ what, from, to string }{
		{"a misspelt field", "    readinessProbe:", "    readinesProbe:"},
		{"a port out of range", "        port: 2378", "        port: 99999"},
	} {
		if !bytes.Contains(data, []byte(broken.from)) {
			t.Fatalf("etcd-static-pod.yaml has no %q to break", broken.from)
		}
		objs, err := readManifest(bytes.Replace(data, []byte(broken.from), []byte(broken.to), 1))
		if err != nil {
			t.Fatal(err)
		}
		err = d.create(ctx, objs[0])
		if err == nil {
			t.Errorf("the static pod with %s was accepted", broken.what)
			continue
		}
		if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
			t.Errorf("the static pod with %s was refused for another reason: %v", broken.what, err)
		}
		t.Logf("with %s: %v", broken.what, err)
	}
}
