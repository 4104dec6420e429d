package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker"
)

// replyErrors maps the first word of a Redis error reply to the broker error it
// means. Replies not listed are wrapped without a sentinel.
var replyErrors = map[string]error{
	"LOADING":     broker.ErrUnavailable, // the server is loading its dataset
	"BUSY":        broker.ErrUnavailable, // another script is running too long
	"READONLY":    broker.ErrUnavailable, // a replica, during a failover
	"MASTERDOWN":  broker.ErrUnavailable,
	"CLUSTERDOWN": broker.ErrUnavailable,
	"TRYAGAIN":    broker.ErrUnavailable,
	"OOM":         broker.ErrUnavailable, // maxmemory reached and nothing to evict
	"NOAUTH":      broker.ErrPermissionDenied,
	"WRONGPASS":   broker.ErrPermissionDenied,
	"NOPERM":      broker.ErrPermissionDenied,
}

// wrap names the operation and the key, and adds the broker sentinel err
// means: ErrUnavailable for anything that is not a reply from the server (a
// refused connection, a timeout, a full pool), ErrClosed for a closed client.
// It returns ctx.Err() unwrapped when ctx ended.
func (s *Store) wrap(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if sentinel := classify(err); sentinel != nil {
		return fmt.Errorf("redisstore: %s %q: %w: %w", op, key, sentinel, err)
	}
	return fmt.Errorf("redisstore: %s %q: %w", op, key, err)
}

func classify(err error) error {
	if errors.Is(err, redis.ErrClosed) {
		return broker.ErrClosed
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		return broker.ErrUnavailable
	}
	word, _, _ := strings.Cut(strings.TrimPrefix(reply.Error(), "ERR "), " ")
	return replyErrors[word]
}
