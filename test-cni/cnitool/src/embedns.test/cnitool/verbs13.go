//go:build libcni13

// The CNI 1.1 verbs of libcni 1.2+: `cnitool gc <net> <netns>` keeps the attachments named in
// CNI_VALID_ATTACHMENTS ("<containerID>/<ifname>,..."; libcni first DELs the cached
// attachments not named, then sends GC with cni.dev/valid-attachments), and
// `cnitool status <net> <netns>` (the netns is ignored) sends STATUS to every plugin.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func init() {
	extraVerbs["gc"] = func(cninet *libcni.CNIConfig, netconf *libcni.NetworkConfigList, _ *libcni.RuntimeConf) error {
		args := &libcni.GCArgs{}
		for _, a := range strings.Split(os.Getenv("CNI_VALID_ATTACHMENTS"), ",") {
			if a == "" {
				continue
			}
			id, ifname, ok := strings.Cut(a, "/")
			if !ok {
				return fmt.Errorf("CNI_VALID_ATTACHMENTS: %q is not <containerID>/<ifname>", a)
			}
			args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: ifname})
		}
		return cninet.GCNetworkList(context.TODO(), netconf, args)
	}
	extraVerbs["status"] = func(cninet *libcni.CNIConfig, netconf *libcni.NetworkConfigList, _ *libcni.RuntimeConf) error {
		return cninet.GetStatusNetworkList(context.TODO(), netconf)
	}
}
