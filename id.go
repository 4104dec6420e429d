package broker

import (
	"encoding/binary"
	"math/rand/v2"
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
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint64(raw[8:], rand.Uint64())
	return encodeBase32(raw)
}

// encodeBase32 writes 128 bits as 26 base32 digits, most significant first
// (the first digit carries the top 3 bits).
func encodeBase32(raw [16]byte) string {
	hi := binary.BigEndian.Uint64(raw[:8])
	lo := binary.BigEndian.Uint64(raw[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
