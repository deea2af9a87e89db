// Package layout holds the tests that keep the repository's package
// layout: which package may import which (ARCHITECTURE.md).
package layout
