package client

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Token returns the join token given as --token or, so that it never
// shows in the process list, in the file --token-file names; not both.
// The file must be readable by its owner only, as the secret it holds.
func Token(flag, file string) (string, error) {
	switch {
	case file == "":
		return flag, nil
	case flag != "":
		return "", errors.New("--token and --token-file: give one or the other")
	}
	fi, err := os.Stat(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("--token-file: %s is readable by other users (mode %04o): chmod 600 it", file, fi.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file: %s is empty", file)
	}
	return tok, nil
}
