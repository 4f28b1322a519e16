package kubernetes

import (
	"context"
	"time"

	"k8s.io/client-go/tools/leaderelection"
)

// leaseTimes derives the renew deadline and retry period from the lease
// duration, keeping client-go's order: duration > deadline > 1.2 * retry.
func leaseTimes(d time.Duration) (renew, retry time.Duration) {
	renew = d * 2 / 3
	retry = min(d/6, 2*time.Second)
	return renew, retry
}

// contend runs for the lease until ctx is done, contending again each time
// leadership is lost (for example after a network partition), and releases
// it when ctx ends.
func (b *Backend) contend(ctx context.Context) {
	lock := b.newLock() // a LeaseLock that also publishes Config.PeerAddr
	renew, retry := leaseTimes(b.cfg.LeaseDuration)
	log := b.log.With("lease", b.cfg.LeaseName, "identity", b.cfg.Identity)
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   b.cfg.LeaseDuration,
			RenewDeadline:   renew,
			RetryPeriod:     retry,
			ReleaseOnCancel: b.release,
			Name:            b.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					b.leader.Store(true)
					log.Info("leading: this process now decides replica counts")
				},
				OnStoppedLeading: func() {
					if b.leader.Swap(false) {
						log.Info("stopped leading")
					}
				},
				OnNewLeader: func(id string) {
					if id != b.cfg.Identity {
						log.Info("following", "leader", id)
					}
				},
			},
		})
		if err != nil {
			// Only a bad configuration fails here; it will not get better.
			log.Error("leader election", "err", err)
			return
		}
		le.Run(ctx)
		b.leader.Store(false)
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}
