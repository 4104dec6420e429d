// Package compare benchmarks brokerkit against Watermill on the same brokers,
// side by side in one run, and reports each figure as a ratio
// brokerkit/watermill. It is a module of its own so that Watermill and its
// dependencies never enter the library's go.mod.
//
// The benchmarks are in the _test.go files; README.md has the method, the
// command and the measured table.
package compare
