package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		envSet, docker, ci bool
		want               source
	}{
		{envSet: true, docker: true, ci: true, want: fromEnv},
		{envSet: true, docker: true, ci: false, want: fromEnv},
		{envSet: true, docker: false, ci: true, want: fromEnv},
		{envSet: true, docker: false, ci: false, want: fromEnv},
		{envSet: false, docker: true, ci: true, want: fromContainer},
		{envSet: false, docker: true, ci: false, want: fromContainer},
		{envSet: false, docker: false, ci: true, want: failTest},
		{envSet: false, docker: false, ci: false, want: skipTest},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("env=%v/docker=%v/ci=%v", tt.envSet, tt.docker, tt.ci)
		t.Run(name, func(t *testing.T) {
			if got := decide(tt.envSet, tt.docker, tt.ci); got != tt.want {
				t.Errorf("decide() = %d, want %d", got, tt.want)
			}
		})
	}
}

// recorder is a testing.TB whose Fatal and Skip record the message and end the
// goroutine, as the real ones do.
type recorder struct {
	testing.TB
	outcome string // "", "fatal" or "skip"
	msg     string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.outcome, r.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.outcome, r.msg = "skip", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runResolve calls resolve on a recorder in its own goroutine, so that Goexit ends only it.
func runResolve(t *testing.T, svc service, sys system) (got string, r *recorder) {
	r = &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = resolve(r, svc, sys)
	}()
	<-done
	return got, r
}

func fakeSystem(env map[string]string, docker bool, dialErr error) system {
	return system{
		getenv: func(k string) string { return env[k] },
		docker: func() bool { return docker },
		dial:   func(string) error { return dialErr },
	}
}

func TestResolve(t *testing.T) {
	const secretURL = "postgres://brokerkit:s3cret@127.0.0.1:5432/brokerkit?sslmode=disable"
	fake := service{
		name:        "FakeDB",
		envVar:      "BROKERKIT_FAKE_URL",
		defaultPort: map[string]string{"postgres": "5432"},
		start:       func() (string, error) { return "postgres://from-container:5432/x", nil },
	}
	failing := fake
	failing.name = "FailingDB"
	failing.start = func() (string, error) { return "", errors.New("no such image") }

	tests := []struct {
		name        string
		svc         service
		env         map[string]string
		docker      bool
		dialErr     error
		wantOutcome string
		want        string   // endpoint, when the test goes on
		wantInMsg   []string // substrings of the Fatal or Skip message
	}{
		{
			name: "env set and reachable", svc: fake,
			env:  map[string]string{"BROKERKIT_FAKE_URL": secretURL},
			want: secretURL,
		},
		{
			name: "env wins over docker", svc: fake, docker: true,
			env:  map[string]string{"BROKERKIT_FAKE_URL": secretURL, "CI": "true"},
			want: secretURL,
		},
		{
			name: "env set but nothing listens", svc: fake,
			env:         map[string]string{"BROKERKIT_FAKE_URL": secretURL},
			dialErr:     errors.New("connection refused"),
			wantOutcome: "fatal",
			wantInMsg:   []string{"FakeDB", "BROKERKIT_FAKE_URL", "127.0.0.1:5432", "connection refused", "make brokers-up"},
		},
		{
			name: "env set but malformed", svc: fake,
			env:         map[string]string{"BROKERKIT_FAKE_URL": "mysql://brokerkit:s3cret@db/x"},
			wantOutcome: "fatal",
			wantInMsg:   []string{"FakeDB", "BROKERKIT_FAKE_URL", `scheme "mysql"`},
		},
		{
			name: "docker starts a container", svc: fake, docker: true,
			want: "postgres://from-container:5432/x",
		},
		{
			name: "docker fails to start it", svc: failing, docker: true,
			wantOutcome: "fatal",
			wantInMsg:   []string{"FailingDB", "Docker", "no such image"},
		},
		{
			name: "nothing, locally", svc: fake,
			env:         map[string]string{"CI": "false"},
			wantOutcome: "skip",
			wantInMsg:   []string{"FakeDB", "BROKERKIT_FAKE_URL", "make brokers-up"},
		},
		{
			name: "nothing, in CI", svc: fake,
			env:         map[string]string{"CI": "true"},
			wantOutcome: "fatal",
			wantInMsg:   []string{"FakeDB", "BROKERKIT_FAKE_URL", "make brokers-up", "CI=true"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, r := runResolve(t, tt.svc, fakeSystem(tt.env, tt.docker, tt.dialErr))
			if r.outcome != tt.wantOutcome {
				t.Fatalf("outcome = %q (%s), want %q", r.outcome, r.msg, tt.wantOutcome)
			}
			if got != tt.want {
				t.Errorf("endpoint = %q, want %q", got, tt.want)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(r.msg, s) {
					t.Errorf("message %q lacks %q", r.msg, s)
				}
			}
			if strings.Contains(r.msg, "s3cret") {
				t.Errorf("message %q leaks the password", r.msg)
			}
		})
	}
}

func TestHostPorts(t *testing.T) {
	tests := []struct {
		svc     service
		value   string
		want    []string
		wantErr bool
	}{
		{svc: rabbitMQ, value: "amqp://guest:guest@127.0.0.1:5672/", want: []string{"127.0.0.1:5672"}},
		{svc: rabbitMQ, value: "amqp://guest:guest@localhost/vh", want: []string{"localhost:5672"}},
		{svc: rabbitMQ, value: "amqps://h", want: []string{"h:5671"}},
		{svc: rabbitMQ, value: "http://h", wantErr: true},
		{svc: kafka, value: "127.0.0.1:9092", want: []string{"127.0.0.1:9092"}},
		{svc: kafka, value: " a:1, b:2 ,", want: []string{"a:1", "b:2"}},
		{svc: kafka, value: "a", wantErr: true},
		{svc: kafka, value: ",", wantErr: true},
		{svc: sqs, value: "http://127.0.0.1:9324", want: []string{"127.0.0.1:9324"}},
		{svc: sqs, value: "https://sqs.local", want: []string{"sqs.local:443"}},
		{svc: redis, value: "redis://127.0.0.1:6379/0", want: []string{"127.0.0.1:6379"}},
		{svc: redis, value: "127.0.0.1:6379", wantErr: true},
		{svc: postgres, value: "postgres://u:p@[::1]/db", want: []string{"[::1]:5432"}},
		{svc: postgres, value: "postgresql://u:p@h:6543/db", want: []string{"h:6543"}},
		{svc: postgres, value: "host=h user=u", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.svc.name+"/"+tt.value, func(t *testing.T) {
			got, err := hostPorts(tt.svc, tt.value)
			if (err != nil) != tt.wantErr {
				t.Fatalf("hostPorts() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Errorf("error %v does not wrap errMalformed", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("hostPorts() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDockerAddrs(t *testing.T) {
	if got := dockerAddrs("tcp://10.0.0.1:2376", "", ""); !slices.Equal(got, []string{"tcp://10.0.0.1:2376"}) {
		t.Errorf("with DOCKER_HOST: %q", got)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := dockerAddrs("", dir, filepath.Join(dir, "no-home"))
	if !slices.Contains(got, "unix://"+sock) {
		t.Errorf("dockerAddrs() = %q, want it to hold %q", got, "unix://"+sock)
	}
	if slices.Contains(got, "unix://"+filepath.Join(dir, "no-home", ".docker", "run", "docker.sock")) {
		t.Errorf("dockerAddrs() = %q lists a socket that does not exist", got)
	}
}

func TestPingDocker(t *testing.T) {
	dir := t.TempDir()

	engine := filepath.Join(dir, "engine.sock")
	l, err := net.Listen("unix", engine)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_ping" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "OK")
	})}
	go srv.Serve(l)
	defer srv.Close()

	// A socket file nobody accepts on: a stale engine socket.
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()

	tests := []struct {
		addr string
		want bool
	}{
		{"unix://" + engine, true},
		{"unix://" + stale, false},
		{"unix://" + filepath.Join(dir, "absent.sock"), false},
		{"tcp://127.0.0.1:1", false},
		{"ssh://user@host", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := pingDocker(tt.addr); got != tt.want {
				t.Errorf("pingDocker(%q) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}
