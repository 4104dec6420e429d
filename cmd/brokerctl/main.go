// Command brokerctl operates any broker that brokerkit can open, with the same
// URLs the services use: publish messages, tail a topic, watch depth and lag,
// and inspect or redrive dead letters.
//
//	brokerctl [--url URL] <command> [flags] [args]
//
// The URL comes from --url or the BROKER_URL environment variable. Exit codes:
// 0 success, 1 the operation failed, 2 bad usage, 3 nothing arrived before
// --timeout (tail).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/brokerkit/broker"
	_ "github.com/brokerkit/broker/adapters/kafkabroker"
	_ "github.com/brokerkit/broker/adapters/membroker"
	_ "github.com/brokerkit/broker/adapters/rabbitbroker"
	_ "github.com/brokerkit/broker/adapters/sqsbroker"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitTimeout = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// env carries what every command needs.
type env struct {
	url    string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"publish": {"publish messages from arguments or stdin (one per line)", cmdPublish},
		"tail":    {"print messages as they arrive, with headers", cmdTail},
		"stats":   {"show depth, in-flight, lag, consumers and dead letters", cmdStats},
		"dlq":     {"inspect (peek) or send back (redrive) dead letters", cmdDLQ},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: brokerctl [--url URL] <command> [flags] [args]")
	fmt.Fprintln(w, "\nThe broker URL comes from --url or $BROKER_URL. Registered schemes:", strings.Join(broker.Schemes(), ", "))
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'brokerctl <command> --help' for a command's flags.")
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("brokerctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	u := fs.String("url", os.Getenv(broker.EnvURL), "broker URL (default $BROKER_URL)")
	fs.Usage = func() { usage(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(stderr, "brokerctl: unknown command %q\n\n", fs.Arg(0))
		usage(stderr)
		return exitUsage
	}
	e := &env{url: *u, stdin: stdin, stdout: stdout, stderr: stderr}
	return cmd.run(ctx, e, fs.Args()[1:])
}

// flags returns a FlagSet for a subcommand that prints its usage line.
func (e *env) flags(name, argsUsage, doc string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: brokerctl %s [flags] %s\n\n%s\n\nFlags:\n", name, argsUsage, doc)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses a subcommand's flags and checks its argument count; ok false
// means return code.
func parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() < minArgs || maxArgs >= 0 && fs.NArg() > maxArgs {
		fs.Usage()
		return exitUsage, false
	}
	return 0, true
}

func (e *env) checkURL() bool {
	if e.url == "" {
		fmt.Fprintln(e.stderr, "brokerctl: no broker URL: pass --url or set BROKER_URL")
		return false
	}
	return true
}

// consumerURL returns the URL with consumer parameters added to its query.
func (e *env) consumerURL(params map[string]string) (string, error) {
	u, err := url.Parse(e.url)
	if err != nil {
		return "", fmt.Errorf("malformed URL %q: %w", broker.Redact(e.url), broker.ErrInvalidArgument)
	}
	q := u.Query()
	for k, v := range params {
		if v != "" {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (e *env) fail(err error) int {
	fmt.Fprintln(e.stderr, "brokerctl:", err)
	if errors.Is(err, broker.ErrInvalidArgument) || errors.Is(err, broker.ErrUnsupported) {
		return exitUsage
	}
	return exitFailed
}
