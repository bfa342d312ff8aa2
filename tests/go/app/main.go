// A plain net/http server with no OpenTelemetry in it: what odiglet traces with eBPF.
//
// Usage: go-app PORT (0: any; the port is printed as "listening PORT").
// GET /hello answers 200, GET /fail 500, GET /chain?next=URL calls URL and answers with its
// status; anything else 404.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		panic(err)
	}
	fmt.Println("listening", listener.Addr().(*net.TCPAddr).Port)
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	http.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "failed", http.StatusInternalServerError)
	})
	http.HandleFunc("/chain", func(w http.ResponseWriter, r *http.Request) {
		response, err := http.Get(r.URL.Query().Get("next"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		response.Body.Close()
		w.WriteHeader(response.StatusCode)
	})
	panic(http.Serve(listener, nil))
}
