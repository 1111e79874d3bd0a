package agent

import (
	"fmt"
	"path/filepath"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// Buckets of the agent's local state file. It caches what the coordinator
// assigned, so a restarted agent keeps running its components while no
// coordinator answers, and what it decided on its own (etcd bootstrap).
var (
	bucketAssignments = []byte("assignments")
	bucketDecisions   = []byte("decisions")
	bucketMeta        = []byte("meta")
)

// store is the agent's bbolt state file, DATA-DIR/state.db.
type store struct{ db *bolt.DB }

func openStore(dataDir string) (*store, error) {
	db, err := bolt.Open(filepath.Join(dataDir, "state.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening local state (is another agent running on this data dir?): %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAssignments, bucketDecisions, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising local state: %w", err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// assignments returns the cached assignments by component.
func (s *store) assignments() (map[string]*pb.Assignment, error) {
	out := map[string]*pb.Assignment{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAssignments).ForEach(func(k, v []byte) error {
			as := &pb.Assignment{}
			if err := proto.Unmarshal(v, as); err != nil {
				return fmt.Errorf("cached assignment %s: %w", k, err)
			}
			out[string(k)] = as
			return nil
		})
	})
	return out, err
}

// putAssignments stores fetched assignments and forgets the ones in drop.
func (s *store) putAssignments(put []*pb.Assignment, drop []string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAssignments)
		for _, as := range put {
			v, err := proto.Marshal(as)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(as.Component.Metadata.Name), v); err != nil {
				return err
			}
		}
		for _, name := range drop {
			if err := b.Delete([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// decision returns what the agent decided for a component, or nil.
func (s *store) decision(component string) []byte {
	var out []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketDecisions).Get([]byte(component)); v != nil {
			out = append([]byte{}, v...)
		}
		return nil
	})
	return out
}

// setDecision records (or, with nil, forgets) a decision for a component.
func (s *store) setDecision(component string, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if v == nil {
			return tx.Bucket(bucketDecisions).Delete([]byte(component))
		}
		return tx.Bucket(bucketDecisions).Put([]byte(component), v)
	})
}

// meta reads a small value (the watch index, the servers list).
func (s *store) meta(key string) string {
	var out string
	_ = s.db.View(func(tx *bolt.Tx) error {
		out = string(tx.Bucket(bucketMeta).Get([]byte(key)))
		return nil
	})
	return out
}

func (s *store) setMeta(key, value string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte(key), []byte(value))
	})
}
