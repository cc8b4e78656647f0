package supervisor

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
)

// surveyStart is SurveyStart of the store the start-up restores from, which it returns: the
// store (Config.Store), or Config.RestoreFrom while the store holds no full snapshot (a member
// moving to etcdbr from another tool, whose backups are the newest there are until etcdbr
// took its first full snapshot). The facts about the store's cluster and its newest full
// snapshot stay the store's: the store is where the member backs up. When RestoreFrom cannot
// be read, that is the survey's StoreErr: a member that must be restored never starts empty
// because the backups it should come from did not answer.
func surveyStart(ctx context.Context, cfg Config, v datadir.Verdict, lg *slog.Logger) (StartSurvey, *snapstore.Store, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	survey, err := SurveyStart(ctx, cfg.Etcd, cfg.Store, v, lg)
	if cfg.RestoreFrom == nil || err != nil || survey.StoreErr != nil || survey.NewestFull > 0 {
		return survey, cfg.Store, err
	}
	from, err := SurveyStart(ctx, cfg.Etcd, cfg.RestoreFrom, v, lg)
	if from.StoreErr != nil {
		from.StoreErr = fmt.Errorf("--restore-from %s: %w", cfg.RestoreFrom.URL(), from.StoreErr)
	}
	if err != nil || from.StoreErr != nil {
		return from, cfg.RestoreFrom, err
	}
	if from.NewestFull == 0 {
		lg.Warn("--restore-from holds no full snapshot either", "restore_from", cfg.RestoreFrom.URL())
		return survey, cfg.Store, nil
	}
	lg.Info("the store holds no full snapshot yet: the data dir is compared with --restore-from, and restored from it if it must be",
		"store", cfg.Store.URL(), "restore_from", cfg.RestoreFrom.URL(), "layout", cfg.RestoreFrom.Layout(),
		"restore_from_revision", from.Facts.StoreNewest)
	from.Facts.StoreCluster, from.NewestFull = survey.Facts.StoreCluster, survey.NewestFull
	return from, cfg.RestoreFrom, nil
}
