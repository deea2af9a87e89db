// Command signals checks signals for the decoders' fuzz targets
// (pkg/signal): it reads signals as the receiver encodes them
// (signal.Encode), one a line, and answers each with a line, "ok" or why
// a RemediationRequest built from it would be refused
// (crdcheck.Signals).
//
// It is a process of its own because a fuzz binary instruments every
// package it links for coverage and scans all of the counters after each
// input: linked into the fuzz targets, the writer's and the API server's
// validation code (Kubernetes client, OpenAPI, CEL) made every input cost
// milliseconds even when it was not checked.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/crdcheck"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "signals:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	c, err := crdcheck.NewSignals()
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(in, 1<<20)
	w := bufio.NewWriter(out)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return nil
		}
		if err != nil && err != io.EOF {
			return err
		}
		answer := "ok"
		var s signal.Signal
		if err := signal.Decode(bytes.TrimSuffix(line, []byte("\n")), &s); err != nil {
			answer = "decoding the signal: " + err.Error()
		} else if err := c.Check(&s); err != nil {
			answer = err.Error()
		}
		if _, err := w.WriteString(strings.ReplaceAll(answer, "\n", " ") + "\n"); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
