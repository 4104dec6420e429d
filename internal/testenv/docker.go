package testenv

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// dockerProbeTimeout bounds one attempt to reach a Docker engine.
const dockerProbeTimeout = time.Second

// dockerReachable reports whether a Docker engine answers, asking once per test binary.
var dockerReachable = sync.OnceValue(func() bool {
	for _, addr := range dockerAddrs(os.Getenv("DOCKER_HOST"), os.Getenv("XDG_RUNTIME_DIR"), os.Getenv("HOME")) {
		if pingDocker(addr) {
			return true
		}
	}
	return false
})

// dockerAddrs lists where to look for a Docker engine: DOCKER_HOST alone when set,
// else the usual socket paths. Paths that do not exist are dropped, so that a machine
// without Docker costs a few stat calls.
func dockerAddrs(dockerHost, runtimeDir, home string) []string {
	if dockerHost != "" {
		return []string{dockerHost}
	}
	paths := []string{"/var/run/docker.sock"}
	if runtimeDir != "" {
		paths = append(paths, filepath.Join(runtimeDir, "docker.sock"))
	}
	if home != "" {
		paths = append(paths,
			filepath.Join(home, ".docker", "run", "docker.sock"),
			filepath.Join(home, ".docker", "desktop", "docker.sock"))
	}
	var addrs []string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			addrs = append(addrs, "unix://"+p)
		}
	}
	return addrs
}

// pingDocker reports whether the engine at addr answers within dockerProbeTimeout: for
// unix:///path, GET /_ping returns 200; for tcp://host:port (maybe TLS), the port accepts
// a connection. Engines behind other schemes (ssh://, npipe://) cannot be probed cheaply
// and are taken as reachable.
func pingDocker(addr string) bool {
	u, err := url.Parse(addr)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "unix":
	case "tcp":
		c, err := net.DialTimeout("tcp", u.Host, dockerProbeTimeout)
		if err != nil {
			return false
		}
		c.Close()
		return true
	default:
		return true
	}
	client := &http.Client{
		Timeout: dockerProbeTimeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", u.Path)
			},
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://docker/_ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
