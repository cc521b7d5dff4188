package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/mask"
)

// maxValuesFile bounds the size of a --values-file.
const maxValuesFile = 1 << 20

func newMaskCmd() *cobra.Command {
	var envs []string
	var valuesFile string
	cmd := &cobra.Command{
		Use:   "mask [--env VAR…] [--values-file F]",
		Short: "Copy standard input to standard output with secrets replaced by ***",
		Long: `Copy standard input to standard output, replacing every occurrence of each secret
with "***": the raw value, each line of a multi-line value, and its base64, hex,
percent-encoded and JSON-escaped forms, also when interrupted by "\r" or colour codes.

--env VAR takes a secret from the environment variable VAR (repeatable, or a comma
list); its value may span several lines. --values-file F reads one secret per line
(a trailing "\r" is dropped, empty lines are skipped); a multi-line secret must come
from --env. Every secret must be at least 8 bytes long. Output is written as soon as
it cannot be part of a secret, and at the latest 50 ms after input pauses.

Exit status: 0 done, 2 usage error (unset variable, short secret, unreadable file).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runMask(cmd, envs, valuesFile) },
	}
	cmd.Flags().StringSliceVar(&envs, "env", nil, "take a secret from environment variable `VAR` (repeatable, comma lists ok)")
	cmd.Flags().StringVar(&valuesFile, "values-file", "", "read secrets from `FILE`, one per line")
	return cmd
}

func runMask(cmd *cobra.Command, envs []string, valuesFile string) error {
	var secrets [][]byte
	for _, name := range envs {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return usageErr("mask: environment variable %s is not set", name)
		}
		if len(v) < mask.MinSecretLen {
			return usageErr("%v (--env %s)", mask.ErrShortSecret, name)
		}
		secrets = append(secrets, []byte(v))
	}
	if valuesFile != "" {
		vs, err := readValuesFile(valuesFile)
		if err != nil {
			return err
		}
		secrets = append(secrets, vs...)
	}
	m, err := mask.NewMatcher(secrets)
	if err != nil {
		return usageErr("%v", err)
	}
	if len(secrets) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "mayfly: mask: no secrets given (--env, --values-file); copying input unchanged")
	}

	w := m.NewWriter(cmd.OutOrStdout(), mask.Options{})
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(w, cmd.InOrStdin(), make([]byte, 32<<10))
		done <- err
	}()
	select {
	case err = <-done:
	case <-cmd.Context().Done():
		err = errors.New("interrupted")
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("mask: %w", err)
	}
	return nil
}

// readValuesFile reads one secret per line.
func readValuesFile(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageErr("mask: --values-file: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxValuesFile+1))
	if err != nil {
		return nil, usageErr("mask: --values-file %s: %v", path, err)
	}
	if len(data) > maxValuesFile {
		return nil, usageErr("mask: --values-file %s: larger than %d bytes", path, maxValuesFile)
	}
	var out [][]byte
	for i, line := range bytes.Split(data, []byte{'\n'}) {
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if len(line) < mask.MinSecretLen {
			return nil, usageErr("%v (--values-file %s, line %d)", mask.ErrShortSecret, path, i+1)
		}
		out = append(out, line)
	}
	return out, nil
}
