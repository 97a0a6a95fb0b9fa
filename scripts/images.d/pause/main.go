// The pod sandbox's placeholder process: it holds the pod's namespaces open and does nothing
// else until it is told to stop. No upstream pause image can be pulled here, so the project
// builds this one (static, no libc) into scripts/images' pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the sandbox it is also every orphan's parent: reap them so that no zombie
	// outlives its container.
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
