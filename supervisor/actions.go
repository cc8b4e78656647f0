package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Why a snapshot on request is refused.
var (
	// ErrNotLeader: only the leader takes backups.
	ErrNotLeader = errors.New("this member is not the leader")
	// ErrDeltasDisabled: delta snapshots are disabled (a delta period of 0).
	ErrDeltasDisabled = errors.New("delta snapshots are disabled")
)

// flushTimeout bounds a flush of the delta taker on request.
const flushTimeout = 2 * time.Minute

// servingBackups returns the backups of the serving etcd, or why there are none.
func (s *Supervisor) servingBackups() (*backups, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateServing || s.backups == nil || s.etcd == nil {
		if s.job != nil && s.job.running() {
			return nil, fmt.Errorf("%w (a restore runs, phase %s): try again once it ended", ErrNotServing, s.job.phase)
		}
		return nil, fmt.Errorf("%w (state %s): try again once it serves", ErrNotServing, s.state)
	}
	srv := s.etcd.Server()
	if lead := srv.Leader(); lead != srv.MemberID() {
		return nil, fmt.Errorf("%w (the leader is %s): ask the leader's etcdbr", ErrNotLeader, lead)
	}
	return s.backups, nil
}

// TakeFull takes a full snapshot now, through the full snapshot runner (after any snapshot
// in flight), and returns the object written.
func (s *Supervisor) TakeFull(ctx context.Context) (catalog.Snapshot, error) {
	b, err := s.servingBackups()
	if err != nil {
		return catalog.Snapshot{}, err
	}
	return b.fullNow(ctx)
}

// FlushDeltas uploads at once every revision etcd had applied when called, as deltas, and
// returns them (none when the store already held that revision). It fails at the first
// failed upload; the delta taker goes on retrying it in the background.
func (s *Supervisor) FlushDeltas(ctx context.Context) (backup.FlushResult, error) {
	if s.cfg.DeltaPeriod <= 0 {
		return backup.FlushResult{}, fmt.Errorf("%w (--delta-snapshot-period 0): take a full snapshot instead", ErrDeltasDisabled)
	}
	if _, err := s.servingBackups(); err != nil {
		return backup.FlushResult{}, err
	}
	if _, mismatch := s.claim.clusters(); mismatch != "" {
		return backup.FlushResult{}, clusterError(mismatch)
	}
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	return s.flusher.Flush(ctx)
}
