package addons

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// DefaultResync is how often an Applier applies unchanged Inputs again.
const DefaultResync = 5 * time.Minute

// Apply makes the cluster's objects match Inputs (server-side apply, field
// manager FieldManager), and deletes oneinfra-made bootstrap token Secrets
// no longer in Inputs. cfg must carry admin credentials.
func Apply(ctx context.Context, cfg *rest.Config, in Inputs) error {
	if err := in.Validate(); err != nil {
		return err
	}
	cs, err := clientFor(cfg)
	if err != nil {
		return err
	}
	return apply(ctx, cs, in, time.Now())
}

// Applier applies Inputs only when they changed since the last successful
// apply, or when Resync has passed since: cheap enough to call on every
// sync. The zero value is ready; an Applier serves one cluster and is safe
// for concurrent use.
type Applier struct {
	// Resync is how often unchanged Inputs are applied again, so that an
	// object deleted or edited by hand comes back; DefaultResync when zero.
	Resync time.Duration

	mu   sync.Mutex
	last [sha256.Size]byte // hash of the last Inputs applied without error
	at   time.Time         // when; zero: apply on the next call
	now  func() time.Time  // time.Now, but for tests
}

// Apply is the package's Apply, skipped (applied false, nil error) when
// the same Inputs were applied through the same API server less than
// Resync ago. A failed apply is retried on the next call.
func (a *Applier) Apply(ctx context.Context, cfg *rest.Config, in Inputs) (applied bool, err error) {
	if err := in.Validate(); err != nil {
		return false, err
	}
	if cfg == nil {
		return false, errors.New("addons: no rest.Config")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock()
	sum, err := inputsHash(cfg.Host, in, now)
	if err != nil {
		return false, err
	}
	return a.run(cfg, sum, now, func(cs kubernetes.Interface) error { return apply(ctx, cs, in, now) })
}

// ApplyRBAC is the package's ApplyRBAC, skipped when applied through the
// same API server less than Resync ago; an Applier used for it is used
// for nothing else.
func (a *Applier) ApplyRBAC(ctx context.Context, cfg *rest.Config) (applied bool, err error) {
	if cfg == nil {
		return false, errors.New("addons: no rest.Config")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.run(cfg, rbacHash(cfg.Host), a.clock(), func(cs kubernetes.Interface) error { return applyRBAC(ctx, cs) })
}

func (a *Applier) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

// run calls fn unless what sum digests was applied less than Resync ago
// (a.mu held).
func (a *Applier) run(cfg *rest.Config, sum [sha256.Size]byte, now time.Time, fn func(kubernetes.Interface) error) (bool, error) {
	resync := a.Resync
	if resync <= 0 {
		resync = DefaultResync
	}
	if !a.at.IsZero() && sum == a.last && now.Sub(a.at) < resync {
		return false, nil
	}
	a.at = time.Time{}
	cs, err := clientFor(cfg)
	if err != nil {
		return false, err
	}
	if err := fn(cs); err != nil {
		return true, err
	}
	a.last, a.at = sum, now
	return true, nil
}

// Reset makes the next Apply apply, changed Inputs or not.
func (a *Applier) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at = time.Time{}
}

// inputsHash digests what an apply at now sends: the API server and the
// Inputs without the tokens expired by then, so that a token expiring is a
// change (its Secret goes).
func inputsHash(host string, in Inputs, now time.Time) ([sha256.Size]byte, error) {
	live := in
	live.BootstrapTokens = nil
	for _, t := range in.BootstrapTokens {
		if t.Expires.IsZero() || t.Expires.After(now) {
			live.BootstrapTokens = append(live.BootstrapTokens, t)
		}
	}
	b, err := json.Marshal(struct {
		Host   string
		Inputs Inputs
	}{host, live})
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("addons: hashing inputs: %w", err)
	}
	return sha256.Sum256(b), nil
}

func clientFor(cfg *rest.Config) (kubernetes.Interface, error) {
	if cfg == nil {
		return nil, errors.New("addons: no rest.Config")
	}
	c := rest.CopyConfig(cfg)
	// About twenty requests per apply: the default 5 QPS would make one
	// take seconds.
	if c.QPS == 0 {
		c.QPS = 50
	}
	if c.Burst == 0 {
		c.Burst = 100
	}
	if c.UserAgent == "" {
		c.UserAgent = "oneinfra-addons"
	}
	// The one deprecated kind it writes, the kubernetes Endpoints, is on
	// purpose: its warning on every apply would only be noise.
	c.WarningHandler = rest.NoWarnings{}
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("addons: client for %s: %w", cfg.Host, err)
	}
	return cs, nil
}

// apply sends every rendered object, then deletes the stale token Secrets.
// An object the API server refuses does not stop the others; any other
// error (transport, context) stops the run.
func apply(ctx context.Context, cs kubernetes.Interface, in Inputs, now time.Time) error {
	objs, err := render(in, now)
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	keep := map[string]bool{}
	var errs []error
	for _, o := range objs {
		if _, ok := o.(*corev1ac.SecretApplyConfiguration); ok {
			keep[deref(o.GetName())] = true
		}
		if err := applyObject(ctx, cs, o, opts); err != nil {
			errs = append(errs, fmt.Errorf("applying %s: %w", describe(o), err))
			if !isStatus(err) {
				return errors.Join(errs...)
			}
		}
	}
	if err := deleteStaleTokens(ctx, cs, keep); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isStatus tells an answer of the API server (the object was refused)
// from a failure to get one.
func isStatus(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status)
}

func applyObject(ctx context.Context, cs kubernetes.Interface, o object, opts metav1.ApplyOptions) error {
	var err error
	switch o := o.(type) {
	case *corev1ac.SecretApplyConfiguration:
		_, err = cs.CoreV1().Secrets(*o.Namespace).Apply(ctx, o, opts)
	case *corev1ac.ServiceAccountApplyConfiguration:
		_, err = cs.CoreV1().ServiceAccounts(*o.Namespace).Apply(ctx, o, opts)
	case *corev1ac.ConfigMapApplyConfiguration:
		_, err = cs.CoreV1().ConfigMaps(*o.Namespace).Apply(ctx, o, opts)
	case *corev1ac.ServiceApplyConfiguration:
		_, err = cs.CoreV1().Services(*o.Namespace).Apply(ctx, o, opts)
	case *rbacv1ac.ClusterRoleApplyConfiguration:
		_, err = cs.RbacV1().ClusterRoles().Apply(ctx, o, opts)
	case *rbacv1ac.ClusterRoleBindingApplyConfiguration:
		_, err = cs.RbacV1().ClusterRoleBindings().Apply(ctx, o, opts)
	case *rbacv1ac.RoleApplyConfiguration:
		_, err = cs.RbacV1().Roles(*o.Namespace).Apply(ctx, o, opts)
	case *rbacv1ac.RoleBindingApplyConfiguration:
		_, err = cs.RbacV1().RoleBindings(*o.Namespace).Apply(ctx, o, opts)
	case *appsv1ac.DaemonSetApplyConfiguration:
		_, err = cs.AppsV1().DaemonSets(*o.Namespace).Apply(ctx, o, opts)
	case *appsv1ac.DeploymentApplyConfiguration:
		_, err = cs.AppsV1().Deployments(*o.Namespace).Apply(ctx, o, opts)
	case *discoveryv1ac.EndpointSliceApplyConfiguration:
		_, err = cs.DiscoveryV1().EndpointSlices(*o.Namespace).Apply(ctx, o, opts)
	case *corev1ac.EndpointsApplyConfiguration:
		_, err = cs.CoreV1().Endpoints(*o.Namespace).Apply(ctx, o, opts)
	default:
		err = fmt.Errorf("no client for %T", o)
	}
	return err
}

// tokenSelector finds the bootstrap token Secrets oneinfra made.
var tokenSelector = ManagedByLabel + "=" + FieldManager + "," + ComponentLabel + "=" + ComponentBootstrapToken

// deleteStaleTokens deletes the bootstrap token Secrets oneinfra made
// whose names are not in keep.
func deleteStaleTokens(ctx context.Context, cs kubernetes.Interface, keep map[string]bool) error {
	secrets := cs.CoreV1().Secrets(systemNamespace)
	list, err := secrets.List(ctx, metav1.ListOptions{
		LabelSelector: tokenSelector,
		FieldSelector: "type=" + string(corev1.SecretTypeBootstrapToken),
	})
	if err != nil {
		return fmt.Errorf("listing bootstrap token Secrets in %s: %w", systemNamespace, err)
	}
	var errs []error
	for _, s := range list.Items {
		if keep[s.Name] || !strings.HasPrefix(s.Name, tokenSecretPrefix) || s.Type != corev1.SecretTypeBootstrapToken {
			continue
		}
		uid := s.UID
		err := secrets.Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("deleting Secret %s/%s: %w", systemNamespace, s.Name, err))
		}
	}
	return errors.Join(errs...)
}
