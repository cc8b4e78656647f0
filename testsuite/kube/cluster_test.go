package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// convergeTimeout is how long kube-apiserver and its clients get to show a restored state.
const convergeTimeout = 60 * time.Second

// cluster is one scenario's etcdbr member with a kube-apiserver on it.
type cluster struct {
	m      *member
	etcdbr *process
	etcd   *clientv3.Client
	kube   *apiserver
}

// startCluster starts `etcdbr run` on a new data dir (with extra etcdbr flags), then
// kube-apiserver on its member.
func startCluster(ctx context.Context, t *testing.T, extra ...string) *cluster {
	t.Helper()
	c := &cluster{m: newMember(t)}
	c.etcdbr = c.m.run(ctx, t, c.m.dataDir("data"), extra...)
	var err error
	if c.etcd, err = c.m.etcd(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.etcd.Close() })
	c.kube = startAPIServer(ctx, t, c.m.dir, c.m.clientURL)
	return c
}

// revision is etcd's current revision.
func (c *cluster) revision(ctx context.Context) (int64, error) {
	resp, err := c.etcd.Get(ctx, "health")
	if err != nil {
		return 0, fmt.Errorf("read etcd's revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// createNamespace creates namespace name and returns it as a world of one.
func createNamespace(ctx context.Context, cs kubernetes.Interface, name string) (world, error) {
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	return world{nsKey(name): {RV: ns.ResourceVersion}}, nil
}

// cmName is the name of the i-th configmap the tests create in a namespace.
func cmName(i int) string { return fmt.Sprintf("cm-%02d", i) }

// createConfigMaps creates the configmaps cm-<from> to cm-<to-1> in ns, each with the data
// {"value": "<value>-<i>"}.
func createConfigMaps(ctx context.Context, cs kubernetes.Interface, ns string, from, to int, value string) (world, error) {
	w := world{}
	for i := from; i < to; i++ {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: cmName(i), Namespace: ns},
			Data:       map[string]string{"value": fmt.Sprintf("%s-%d", value, i)},
		}
		got, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create configmap %s/%s: %w", ns, cm.Name, err)
		}
		w[cmKey(ns, got.Name)] = cmObject(got)
	}
	return w, nil
}

// updateConfigMaps sets the data of the configmaps cm-<from> to cm-<to-1> in ns to
// {"value": "<value>-<i>"}.
func updateConfigMaps(ctx context.Context, cs kubernetes.Interface, ns string, from, to int, value string) (world, error) {
	w := world{}
	for i := from; i < to; i++ {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, cmName(i), metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("update configmap %s/%s: %w", ns, cmName(i), err)
		}
		cm.Data = map[string]string{"value": fmt.Sprintf("%s-%d", value, i)}
		got, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
		if err != nil {
			return nil, fmt.Errorf("update configmap %s/%s: %w", ns, cm.Name, err)
		}
		w[cmKey(ns, got.Name)] = cmObject(got)
	}
	return w, nil
}

// deleteConfigMaps deletes the configmaps cm-<from> to cm-<to-1> in ns.
func deleteConfigMaps(ctx context.Context, cs kubernetes.Interface, ns string, from, to int) ([]string, error) {
	var gone []string
	for i := from; i < to; i++ {
		if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, cmName(i), metav1.DeleteOptions{}); err != nil {
			return nil, fmt.Errorf("delete configmap %s/%s: %w", ns, cmName(i), err)
		}
		gone = append(gone, cmKey(ns, cmName(i)))
	}
	return gone, nil
}

// informer is a client-go informer on the configmaps of all namespaces.
type informer struct {
	store cache.Store
	// relistDeletes counts the deletions the informer learned from a relist (a tombstone:
	// the object was gone from a new list) rather than from a watch event.
	relistDeletes atomic.Int64
}

// startInformer starts an informer on configmaps in all namespaces, waits until it synced
// and stops it when the test ends. Its watch errors are logged; a relist after "too old
// resource version" is not one (client-go relists quietly), it shows in relistDeletes.
func startInformer(ctx context.Context, t *testing.T, cs kubernetes.Interface) *informer {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactory(cs, 0)
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	inf := factory.Core().V1().ConfigMaps().Informer()
	start := time.Now()
	err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		t.Logf("informer: watch error after %v: %v", time.Since(start).Round(time.Millisecond), err)
	})
	if err != nil {
		t.Fatalf("informer: %v", err)
	}
	i := &informer{store: inf.GetStore()}
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			i.relistDeletes.Add(1)
		}
	}})
	if err != nil {
		t.Fatalf("informer: %v", err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatalf("the configmap informer did not sync: %v", ctx.Err())
	}
	t.Logf("informer synced in %v", time.Since(start).Round(time.Millisecond))
	return i
}

// refusedInMissingNamespace checks that creating a configmap in namespace ns is refused
// because ns does not exist (NamespaceLifecycle admission, which reads namespaces from
// kube-apiserver's own informer), and that nothing reached etcd. With wait, dry-run creates
// (which pass admission but store nothing) are tried first until one is refused, so that
// admission's informer gets the same time to relist as the clients had.
func (c *cluster) refusedInMissingNamespace(ctx context.Context, t *testing.T, ns string, wait bool) {
	t.Helper()
	cms := c.kube.client.CoreV1().ConfigMaps(ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-restore", Namespace: ns}, Data: map[string]string{"value": "x"}}
	refused := func(err error) bool { return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) }
	if wait {
		took, err := poll(ctx, convergeTimeout, func(ctx context.Context) error {
			_, err := cms.Create(ctx, cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			switch {
			case err == nil:
				return fmt.Errorf("a dry-run create in namespace %s is admitted", ns)
			case refused(err):
				return nil
			}
			return err
		})
		if err != nil {
			t.Errorf("admission does not see that namespace %s is gone: %v", ns, err)
		} else {
			t.Logf("admission refuses creates in namespace %s after %v", ns, took.Round(time.Millisecond))
		}
	}
	_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
	switch {
	case err == nil:
		t.Errorf("a configmap was created in namespace %s, which the restore removed: kube-apiserver still believes the namespace exists", ns)
	case refused(err):
		t.Logf("create in namespace %s refused: %v", ns, err)
	default:
		t.Errorf("create in namespace %s: want not found or forbidden (the namespace does not exist), got %v", ns, err)
	}
	resp, gerr := c.etcd.Get(ctx, "/registry/configmaps/"+ns+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if gerr != nil {
		t.Errorf("read etcd: %v", gerr)
	} else if resp.Count != 0 {
		t.Errorf("etcd holds %d configmaps in namespace %s, which the restore removed", resp.Count, ns)
	}
}

// writesSucceed creates and updates configmaps in ns through kube-apiserver and checks
// that etcd holds the writes.
func (c *cluster) writesSucceed(ctx context.Context, t *testing.T, ns string) {
	t.Helper()
	cs := c.kube.client
	created, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "after-restore", Namespace: ns},
		Data:       map[string]string{"value": "created after the restore"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("create a configmap in namespace %s after the restore: %v", ns, err)
		return
	}
	updated, err := updateConfigMaps(ctx, cs, ns, 0, 1, "after-restore")
	if err != nil {
		t.Errorf("update after the restore: %v", err)
		return
	}
	want := updated.with(world{cmKey(ns, created.Name): cmObject(created)})
	got, err := etcdWorld(ctx, c.etcd, inNamespaces{ns})
	if err != nil {
		t.Errorf("read etcd: %v", err)
		return
	}
	for k, w := range want {
		if d := diff(world{k: w}, got.only(k)); d != "" {
			t.Errorf("the write of %s after the restore is not in etcd as kube-apiserver answered: %s", k, d)
		}
	}
}

// logWatchEvidence logs what kube-apiserver logged since byte mark of its log about its
// watches on etcd: how many were told "compacted", and which watch caches were
// re-initialized (relisted from etcd), so that a run shows whether the configmap and
// namespace caches relisted after the restore.
func (c *cluster) logWatchEvidence(t *testing.T, mark int64) {
	t.Helper()
	compacted := len(c.kube.proc.linesSince(mark, "required revision has been compacted"))
	const prefix = "Terminating all watchers from cacher "
	var relisted []string
	for _, l := range c.kube.proc.linesSince(mark, prefix) {
		relisted = append(relisted, strings.TrimSpace(l[strings.Index(l, prefix)+len(prefix):]))
	}
	slices.Sort(relisted)
	relisted = slices.Compact(relisted)
	var stale []string
	for _, r := range []string{"configmaps", "namespaces"} {
		if !slices.Contains(relisted, r) {
			stale = append(stale, r)
		}
	}
	t.Logf("kube-apiserver since the restore: %d watches on etcd told \"required revision has been compacted\"; "+
		"%d watch caches re-initialized: %s; not re-initialized among configmaps and namespaces: %s",
		compacted, len(relisted), orNone(relisted), orNone(stale))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
