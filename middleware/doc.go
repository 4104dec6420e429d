// Package middleware holds broker.Middleware for handlers: Retry, Timeout and
// Recover. Each wraps a broker.Handler and returns one, so they compose with
// broker.Chain and with middleware from other packages, such as
// idempotency.Dedupe.
//
// # Order of composition
//
// broker.Chain(h, a, b, c) runs a first: a is the outermost middleware, c the
// innermost, and h the handler. Each sees the error of everything inside it
// and nothing of what is outside. A message goes in through a, b, c to h, and
// the error (or nil) comes back out through c, b, a to the consumer, which
// acknowledges on nil and redelivers on an error. Where each one goes matters:
//
//   - Recover turns a panic into a *broker.PanicError. The consumer engine does
//     the same for a panic that reaches it, so Recover is about the middleware
//     around it: those outside see an ordinary error, those inside see the
//     panic unwind through them. Outermost, it also catches a panic in another
//     middleware.
//   - Timeout bounds what is inside it. Outside Retry it bounds all attempts and
//     the waits between them; inside Retry it bounds each attempt.
//   - Retry repeats what is inside it, in process, before the consumer sees a
//     failure. The consumer's own redelivery (ConsumerOptions.MaxAttempts and
//     Backoff) still applies once Retry gives up, so in-process attempts
//     multiply broker attempts.
//   - idempotency.Dedupe claims the message key before what is inside it runs.
//     Put Retry inside Dedupe, so that one claim covers every in-process
//     attempt; keep its lease longer than the Timeout that bounds the handler.
//
// A chain that reads well for most services:
//
//	h := broker.Chain(sendEmail,
//		middleware.Recover(),                  // a panic anywhere becomes an error
//		middleware.Timeout(30*time.Second),    // bounds the claim, the attempts and the waits
//		idempotency.Dedupe(store, nil),        // lease (5 min) outlives the timeout
//		middleware.Retry(middleware.RetryOptions{MaxAttempts: 3}),
//	)
//
// Constructors panic on arguments that can never work (a non-positive
// timeout, a negative attempt count): these are programming errors found when
// the service starts, as with database/sql.Register.
package middleware
