package middleware

import (
	"context"
	"runtime/debug"

	"github.com/brokerkit/broker"
)

// Recover turns a panic in the handler (or in middleware inside it) into a
// *broker.PanicError holding the panic value and the panicking goroutine's
// stack, returned as the handler's error. The message is therefore
// redelivered, or dead-lettered with the stack in its reason once its attempts
// are used up, and middleware outside Recover sees an ordinary error.
func Recover() broker.Middleware {
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = &broker.PanicError{Value: p, Stack: debug.Stack()}
				}
			}()
			return next(ctx, m)
		}
	}
}
