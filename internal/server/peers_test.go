package server

import (
	"net"
	"testing"
)

func TestPeerAddr(t *testing.T) {
	for _, tc := range []struct {
		name, flag, podIP string
		admin             net.Addr
		want              string
	}{
		{"flag wins", "10.1.2.3:9000", "10.0.0.7", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, "10.1.2.3:9000"},
		{"pod IP and the admin port", "", "10.0.0.7", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, "10.0.0.7:8081"},
		{"pod IPv6", "", "fd00::7", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, "[fd00::7]:8081"},
		{"the admin address", "", "", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234}, "127.0.0.1:41234"},
		{"every address names none", "", "", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, ""},
		{"every IPv6 address names none", "", "", &net.TCPAddr{IP: net.IPv6unspecified, Port: 8081}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_IP", tc.podIP)
			if got := peerAddr(tc.flag, tc.admin); got != tc.want {
				t.Fatalf("peerAddr = %q, want %q", got, tc.want)
			}
		})
	}
}
