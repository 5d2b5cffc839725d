// Package s3server pins the SeaweedFS release whose S3 gateway the S3 repository tests run
// against. The binary is built by build.sh; nothing here is imported.
package s3server
