// cnitool for the embedns test harness: upstream cnitool's interface (add, check, del over
// the conflists in NETCONFPATH; CNI_PATH, CNI_ARGS, CAP_ARGS, CNI_IFNAME honoured; the
// container ID derived from the netns path) built against Debian's libcni source. Two
// additions for tests: CNI_CONTAINERID overrides the derived ID, and CNI_CACHE_DIR isolates
// libcni's result cache. Built with the tag libcni13 against libcni 1.3 (test-cni/newer/fetch.sh),
// it also has gc and status (verbs13.go).
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

const defaultNetDir = "/etc/cni/net.d"

// Verbs of newer libcni versions, registered by files built only against them (verbs13.go).
var extraVerbs = map[string]func(*libcni.CNIConfig, *libcni.NetworkConfigList, *libcni.RuntimeConf) error{}

func parseArgs(args string) ([][2]string, error) {
	var result [][2]string
	for _, pair := range strings.Split(args, ";") {
		if pair == "" {
			continue
		}
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return nil, fmt.Errorf("invalid CNI_ARGS pair %q", pair)
		}
		result = append(result, [2]string{kv[0], kv[1]})
	}
	return result, nil
}

func exit(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func usage() {
	exe := filepath.Base(os.Args[0])
	fmt.Fprintf(os.Stderr, "%s: Add, check, or remove network interfaces from a network namespace\n", exe)
	fmt.Fprintf(os.Stderr, "  %s add   <net> <netns>\n", exe)
	fmt.Fprintf(os.Stderr, "  %s check <net> <netns>\n", exe)
	fmt.Fprintf(os.Stderr, "  %s del   <net> <netns>\n", exe)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 4 {
		usage()
	}
	netdir := os.Getenv("NETCONFPATH")
	if netdir == "" {
		netdir = defaultNetDir
	}
	netconf, err := libcni.LoadConfList(netdir, os.Args[2])
	if err != nil {
		exit(err)
	}
	var capabilityArgs map[string]interface{}
	if v := os.Getenv("CAP_ARGS"); v != "" {
		if err := json.Unmarshal([]byte(v), &capabilityArgs); err != nil {
			exit(fmt.Errorf("CAP_ARGS: %v", err))
		}
	}
	var cniArgs [][2]string
	if v := os.Getenv("CNI_ARGS"); v != "" {
		if cniArgs, err = parseArgs(v); err != nil {
			exit(err)
		}
	}
	ifName, ok := os.LookupEnv("CNI_IFNAME")
	if !ok {
		ifName = "eth0"
	}
	netns, err := filepath.Abs(os.Args[3])
	if err != nil {
		exit(err)
	}
	containerID := os.Getenv("CNI_CONTAINERID")
	if containerID == "" {
		s := sha512.Sum512([]byte(netns))
		containerID = fmt.Sprintf("cnitool-%x", s[:10])
	}
	var cninet *libcni.CNIConfig
	if dir := os.Getenv("CNI_CACHE_DIR"); dir != "" {
		cninet = libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), dir, nil)
	} else {
		cninet = libcni.NewCNIConfig(filepath.SplitList(os.Getenv("CNI_PATH")), nil)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           cniArgs,
		CapabilityArgs: capabilityArgs,
	}
	switch os.Args[1] {
	case "add":
		result, err := cninet.AddNetworkList(context.TODO(), netconf, rt)
		if result != nil {
			_ = result.Print()
		}
		exit(err)
	case "check":
		exit(cninet.CheckNetworkList(context.TODO(), netconf, rt))
	case "del":
		exit(cninet.DelNetworkList(context.TODO(), netconf, rt))
	default:
		if verb, ok := extraVerbs[os.Args[1]]; ok {
			exit(verb(cninet, netconf, rt))
		}
		usage()
	}
}
