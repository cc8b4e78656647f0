package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
)

// object is what the tests compare of a namespace or a configmap: its resourceVersion
// (the mod revision of its etcd key, which a restore keeps) and a configmap's data.
type object struct {
	RV   string
	Data map[string]string
}

// world is a set of objects by key: "namespaces/<name>" or "configmaps/<namespace>/<name>".
type world map[string]object

func nsKey(name string) string     { return "namespaces/" + name }
func cmKey(ns, name string) string { return "configmaps/" + ns + "/" + name }

// only is the part of w whose keys start with one of prefixes.
func (w world) only(prefixes ...string) world {
	out := world{}
	for k, o := range w {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out[k] = o
				break
			}
		}
	}
	return out
}

// with returns a copy of w with more's objects added or replaced.
func (w world) with(more world) world {
	out := maps.Clone(w)
	maps.Copy(out, more)
	return out
}

// diff says how got differs from want: the keys missing, the keys there should not be, and
// the objects whose version or data differ (a few of each, with counts); "" when equal.
func diff(want, got world) string {
	var missing, extra, differ []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case g.RV != w.RV || !maps.Equal(g.Data, w.Data):
			differ = append(differ, fmt.Sprintf("%s (resourceVersion %s, data %v; want %s, %v)", k, g.RV, g.Data, w.RV, w.Data))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	var parts []string
	for _, c := range []struct {
		what string
		keys []string
	}{{"missing", missing}, {"there but should not be", extra}, {"differ", differ}} {
		if len(c.keys) == 0 {
			continue
		}
		slices.Sort(c.keys)
		shown := c.keys[:min(len(c.keys), 3)]
		more := ""
		if len(c.keys) > len(shown) {
			more = fmt.Sprintf(", ... %d more", len(c.keys)-len(shown))
		}
		parts = append(parts, fmt.Sprintf("%d %s: %s%s", len(c.keys), c.what, strings.Join(shown, ", "), more))
	}
	return strings.Join(parts, "; ")
}

// inNamespaces selects the objects of the given namespaces (all when none are given).
type inNamespaces []string

func (n inNamespaces) has(ns string) bool { return len(n) == 0 || slices.Contains(n, ns) }

// view is what one kind of client sees: read returns the objects it shows.
type view struct {
	name string
	read func(ctx context.Context) (world, error)
	// shows is the part of a world the view can show.
	shows func(world) world
}

// kinds is a view's shows for views of whole kinds of objects ("namespaces/", "configmaps/").
func kinds(prefixes ...string) func(world) world {
	return func(w world) world { return w.only(prefixes...) }
}

// listView is what consistent lists (resourceVersion "") of namespaces and configmaps show.
func listView(cs kubernetes.Interface, sel inNamespaces) view {
	return view{name: "consistent list", shows: kinds("namespaces/", "configmaps/"), read: func(ctx context.Context) (world, error) {
		w := world{}
		nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list namespaces: %w", err)
		}
		for _, ns := range nss.Items {
			if sel.has(ns.Name) {
				w[nsKey(ns.Name)] = object{RV: ns.ResourceVersion}
			}
		}
		cms, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list configmaps: %w", err)
		}
		for _, cm := range cms.Items {
			if sel.has(cm.Namespace) {
				w[cmKey(cm.Namespace, cm.Name)] = cmObject(&cm)
			}
		}
		return w, nil
	}}
}

// informerView is what an informer's store of configmaps holds.
func informerView(store cache.Store, sel inNamespaces) view {
	return view{name: "informer", shows: kinds("configmaps/"), read: func(context.Context) (world, error) {
		w := world{}
		for _, o := range store.List() {
			cm, ok := o.(*corev1.ConfigMap)
			if !ok {
				return nil, fmt.Errorf("the informer holds a %T", o)
			}
			if sel.has(cm.Namespace) {
				w[cmKey(cm.Namespace, cm.Name)] = cmObject(cm)
			}
		}
		return w, nil
	}}
}

// getView is what a GET of each of keys shows (a key that is not found is absent).
func getView(cs kubernetes.Interface, keys []string) view {
	shows := func(w world) world {
		out := world{}
		for _, k := range keys {
			if o, ok := w[k]; ok {
				out[k] = o
			}
		}
		return out
	}
	return view{name: "single GETs", shows: shows, read: func(ctx context.Context) (world, error) {
		w := world{}
		for _, k := range keys {
			parts := strings.Split(k, "/")
			var o object
			var err error
			switch parts[0] {
			case "namespaces":
				var ns *corev1.Namespace
				if ns, err = cs.CoreV1().Namespaces().Get(ctx, parts[1], metav1.GetOptions{}); err == nil {
					o = object{RV: ns.ResourceVersion}
				}
			case "configmaps":
				var cm *corev1.ConfigMap
				if cm, err = cs.CoreV1().ConfigMaps(parts[1]).Get(ctx, parts[2], metav1.GetOptions{}); err == nil {
					o = cmObject(cm)
				}
			default:
				return nil, fmt.Errorf("no GET for %s", k)
			}
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return nil, fmt.Errorf("get %s: %w", k, err)
			default:
				w[k] = o
			}
		}
		return w, nil
	}}
}

// etcdWorld reads the namespaces and configmaps of the selected namespaces from etcd
// itself, where kube-apiserver keeps them (under /registry, encoded as protobuf).
func etcdWorld(ctx context.Context, cli *clientv3.Client, sel inNamespaces) (world, error) {
	w := world{}
	for _, kind := range []string{"namespaces", "configmaps"} {
		prefix := "/registry/" + kind + "/"
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("read %s from etcd: %w", prefix, err)
		}
		for _, kv := range resp.Kvs {
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(kv.Value, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("decode etcd key %s: %w", kv.Key, err)
			}
			rv := strconv.FormatInt(kv.ModRevision, 10)
			switch o := obj.(type) {
			case *corev1.Namespace:
				if sel.has(o.Name) {
					w[nsKey(o.Name)] = object{RV: rv}
				}
			case *corev1.ConfigMap:
				if sel.has(o.Namespace) {
					w[cmKey(o.Namespace, o.Name)] = object{RV: rv, Data: o.Data}
				}
			default:
				return nil, fmt.Errorf("etcd key %s holds a %T", kv.Key, obj)
			}
		}
	}
	return w, nil
}

func cmObject(cm *corev1.ConfigMap) object {
	return object{RV: cm.ResourceVersion, Data: cm.Data}
}

// converge polls every view until it shows the objects want returns (read again each
// round) or timeout passes. It logs how long each view took and fails the test (without
// stopping it) for each view that never converged, with its last difference. It returns
// whether all converged.
func converge(ctx context.Context, t *testing.T, timeout time.Duration, want func(context.Context) (world, error), views ...view) bool {
	t.Helper()
	start := time.Now()
	last := make([]string, len(views))
	took := make([]time.Duration, len(views))
	pending := len(views)
	for pending > 0 && time.Since(start) < timeout {
		w, err := want(ctx)
		if err != nil {
			t.Logf("read the expected state: %v", err)
		}
		for i, v := range views {
			if err != nil || took[i] != 0 {
				continue
			}
			got, rerr := v.read(ctx)
			switch {
			case rerr != nil:
				last[i] = rerr.Error()
			default:
				last[i] = diff(v.shows(w), got)
			}
			if rerr == nil && last[i] == "" {
				took[i] = time.Since(start)
				pending--
				t.Logf("%s converged after %v", v.name, took[i].Round(time.Millisecond))
			}
		}
		if pending > 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("converge: %v", ctx.Err())
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	for i, v := range views {
		if took[i] == 0 {
			t.Errorf("%s did not converge to the restored state within %v: %s", v.name, timeout, last[i])
		}
	}
	return pending == 0
}

// poll calls check until it returns nil or timeout passes; it returns how long it took, or
// check's last error.
func poll(ctx context.Context, timeout time.Duration, check func(context.Context) error) (time.Duration, error) {
	start := time.Now()
	for {
		err := check(ctx)
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkCompacted checks that etcd answers a read at revision rev with "required revision
// has been compacted": then a watch that resumes at rev (a caught-up watcher of the old
// history resumes at the newest revision it saw + 1) is told so too, and its client relists.
func checkCompacted(ctx context.Context, cli *clientv3.Client, rev int64) error {
	resp, err := cli.Get(ctx, "/registry/namespaces/", clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithLimit(1))
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil
	case errors.Is(err, rpctypes.ErrFutureRev):
		now, nerr := cli.Get(ctx, "health")
		if nerr != nil {
			return fmt.Errorf("etcd's revision is below %d: a watch there waits for writes instead of being told it was compacted", rev)
		}
		return fmt.Errorf("etcd's revision %d is below %d: a watch there waits for writes instead of being told it was compacted",
			now.Header.Revision, rev)
	case err != nil:
		return fmt.Errorf("read etcd at revision %d: %w", rev, err)
	}
	return fmt.Errorf("etcd serves revision %d (its revision is %d, not compacted there): a watcher resuming at %d "+
		"is accepted and never relists", rev, resp.Header.Revision, rev)
}
