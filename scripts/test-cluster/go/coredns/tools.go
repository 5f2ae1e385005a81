//go:build tools

// Package tools names what build.sh builds from this module; the build tag keeps it from
// ever being compiled.
package tools

import _ "github.com/coredns/coredns"
