module odigos-rs/tests/go-app

go 1.23
