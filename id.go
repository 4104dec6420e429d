package broker

import (
	"math/rand/v2"
	"strings"
	"time"
)

// crockford is Crockford's base32 alphabet: digits and letters in ASCII order,
// so IDs compare as strings in the order of their timestamps.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a 26-character unique identifier that sorts by creation time:
// 64 bits of Unix nanoseconds then 64 random bits, in Crockford base32. IDs
// made in the same nanosecond are unique but not ordered. It is safe for
// concurrent use and keeps no state of its own.
//
// The random bits come from the runtime's per-thread ChaCha8 generator, which
// the runtime seeds from the operating system's entropy: unique across
// processes and machines like crypto/rand, at a tenth of its cost. An ID is
// not a secret and must not be used as one.
func NewID() string {
	var out [idLen]byte
	return string(appendID(out[:0], uint64(time.Now().UnixNano()), rand.Uint64()))
}

// idLen is the length of an ID.
const idLen = 26

// idsPerString is how many IDs AssignIDs cuts from one string: enough to
// make one allocation serve a batch, few enough that an ID kept for long
// keeps little else in memory.
const idsPerString = 64

// AssignIDs gives each message of msgs that has no ID a new one, as Publish
// does for them. The IDs are NewID's, made from one clock reading, one
// nanosecond apart, so that they sort in the order of msgs; making a batch's
// IDs together costs a fraction of calling NewID for each. Nil messages are
// skipped.
func AssignIDs(msgs []*Message) {
	t := uint64(0)
	for i := 0; i < len(msgs); {
		// the next up to idsPerString messages without an ID
		var batch [idsPerString]*Message
		n := 0
		for ; i < len(msgs) && n < idsPerString; i++ {
			if m := msgs[i]; m != nil && m.ID == "" {
				batch[n] = m
				n++
			}
		}
		if n == 0 {
			return
		}
		if t == 0 {
			t = uint64(time.Now().UnixNano())
		}
		var b strings.Builder
		b.Grow(n * idLen)
		var buf [idLen]byte
		for range n {
			b.Write(appendID(buf[:0], t, rand.Uint64()))
			t++
		}
		all := b.String()
		for k, m := range batch[:n] {
			m.ID = all[k*idLen : (k+1)*idLen]
		}
	}
}

// appendID appends the ID of a timestamp and random bits to dst: 128 bits as
// 26 base32 digits, most significant first (the first digit carries the top
// 3 bits).
func appendID(dst []byte, hi, lo uint64) []byte {
	var out [idLen]byte
	for i := idLen - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return append(dst, out[:]...)
}
