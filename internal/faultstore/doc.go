// Package faultstore puts a faulty network between etcdbr and a real object-storage server,
// for tests: an HTTP proxy on a loopback port that forwards every request to the server
// (MinIO in the tests) and, for the requests its rules pick, adds latency, answers 5xx or
// S3's SlowDown and RequestTimeTooSkewed errors itself, resets the connection in the middle
// of a request or response body, truncates or corrupts a response body, stalls, leaves a
// request it read unanswered, or moves the Date header far off (a skewed clock).
//
// A test points a store URL at Proxy.URL instead of the server's endpoint (the S3 client
// signs requests for the proxy's host, which the proxy keeps, so the server's signature
// checks pass), sets rules with Proxy.Set while the proxy runs, and reads back every request
// the proxy saw (Proxy.Requests): when it came, what kind it was, whether a fault hit it and
// what the server answered, from which the test proves that retries were bounded and backed
// off, and measures the time to recover.
//
// Nothing here is used by etcdbr itself.
package faultstore
