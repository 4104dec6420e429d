package smoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// uniqueName returns a name for a queue, topic, key or row that no other run uses:
// "brokerkit-smoke-<test>-<random>", with only [a-z0-9-].
func uniqueName(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	test := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		default:
			return '-'
		}
	}, t.Name())
	return "brokerkit-smoke-" + test + "-" + hex.EncodeToString(b)
}

// deadline returns a context that ends after d or when the test ends.
func deadline(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
