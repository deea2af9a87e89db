package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// The helpers below read the files that secret and TLS keys name. Errors
// carry the key as well as the path, so an operator knows which setting
// points at the missing or unreadable mount.

// ReadSecret returns the content of the secret file that key names,
// without the trailing line break editors and `echo` leave. An empty
// secret is an error: it would only ever be refused by the server.
func ReadSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("reading %s: %s is empty", key, path)
	}
	return s, nil
}

// LoadCertPool reads the PEM certificates of the CA file that key names.
func LoadCertPool(key, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("reading %s: no PEM certificate in %s", key, path)
	}
	return pool, nil
}

// LoadKeyPair reads a client certificate and its key; field is the
// section holding cert_file and key_file (e.g. "bus.tls").
func LoadKeyPair(field, certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("reading %s.cert_file and %s.key_file: %w", field, field, err)
	}
	return cert, nil
}

// ClientConfig reads the files and returns the TLS configuration for
// Redis connections, or nil when TLS is off.
func (t RedisTLS) ClientConfig() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pool, err := LoadCertPool("redis.tls.ca_file", t.CAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := LoadKeyPair("redis.tls", t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
