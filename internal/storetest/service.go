package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"

	"cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/blob/s3blob"
	"google.golang.org/api/option"
)

// Service is a running object-storage server as a client sees it.
type Service struct {
	Kind     Kind
	Endpoint string // http://127.0.0.1:<port>
}

// ServiceOf returns the Service a server provides.
func ServiceOf(s *Server) Service {
	return Service{Kind: s.Kind, Endpoint: s.Endpoint}
}

// ProviderEnv returns the environment variables with which the provider's
// SDK (and so etcdbr) reaches the server: the same ones a user sets.
func (s Service) ProviderEnv() []string {
	switch s.Kind {
	case S3:
		return []string{
			"AWS_ACCESS_KEY_ID=" + MinIOUser,
			"AWS_SECRET_ACCESS_KEY=" + MinIOPassword,
			// Keep the user's own AWS configuration out of the tests.
			"AWS_CONFIG_FILE=/dev/null",
			"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
			"AWS_EC2_METADATA_DISABLED=true",
		}
	case GCS:
		return []string{"STORAGE_EMULATOR_HOST=" + strings.TrimPrefix(s.Endpoint, "http://")}
	default:
		return []string{"AZURE_STORAGE_ACCOUNT=" + AzuriteAccount, "AZURE_STORAGE_KEY=" + AzuriteKey}
	}
}

// URL returns the store URL of prefix (which may be "") in bucket, as a user
// would write it for this kind of server (with ProviderEnv set).
func (s Service) URL(bucket, prefix string) string {
	path := bucket
	if prefix != "" {
		path += "/" + prefix
	}
	host := strings.TrimPrefix(s.Endpoint, "http://")
	switch s.Kind {
	case S3:
		return "s3://" + path + "?region=us-east-1&use_path_style=true&endpoint=" + url.QueryEscape(s.Endpoint)
	case GCS:
		return "gs://" + path
	default:
		return "azblob://" + path + "?protocol=http&localemu=true&domain=" + url.QueryEscape(host)
	}
}

// NewBucketName returns a fresh bucket name that all three kinds accept.
func NewBucketName() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "etcdbr-" + hex.EncodeToString(b)
}

// Bucket opens the whole bucket (no prefix) with the server's credentials,
// without touching the process environment.
func (s Service) Bucket(ctx context.Context, name string) (*blob.Bucket, error) {
	switch s.Kind {
	case S3:
		return s3blob.OpenBucket(ctx, s.s3Client(), name, nil)
	case GCS:
		client, err := s.gcsClient(ctx)
		if err != nil {
			return nil, err
		}
		return gcsblob.OpenBucket(ctx, nil, name, &gcsblob.Options{Client: client})
	default:
		client, err := s.azureClient(name)
		if err != nil {
			return nil, err
		}
		return azureblob.OpenBucket(ctx, client, nil)
	}
}

// CreateBucket creates a bucket (gocloud, and so etcdbr, never does).
func (s Service) CreateBucket(ctx context.Context, name string) error {
	var err error
	switch s.Kind {
	case S3:
		_, err = s.s3Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	case GCS:
		var client *storage.Client
		if client, err = s.gcsClient(ctx); err == nil {
			err = client.Bucket(name).Create(ctx, "etcdbr-test", nil)
			client.Close()
		}
	default:
		var client *container.Client
		if client, err = s.azureClient(name); err == nil {
			_, err = client.Create(ctx, nil)
		}
	}
	if err != nil {
		return fmt.Errorf("create %s bucket %q at %s: %w", s.Kind, name, s.Endpoint, err)
	}
	return nil
}

// Keys lists every object in the bucket, whatever its name, in lexical order.
func (s Service) Keys(ctx context.Context, bucket string) ([]string, error) {
	b, err := s.Bucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	var keys []string
	it := b.List(nil)
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return keys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list %s bucket %q: %w", s.Kind, bucket, err)
		}
		keys = append(keys, obj.Key)
	}
}

// IncompleteUploads lists what an unfinished upload leaves in the bucket,
// invisible to listings: S3 multipart uploads in progress, Azure blobs with
// only uncommitted blocks. GCS keeps resumable upload sessions outside the
// bucket, with no API to list them: nil.
func (s Service) IncompleteUploads(ctx context.Context, bucket string) ([]string, error) {
	switch s.Kind {
	case S3:
		out, err := s.s3Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		if err != nil {
			return nil, fmt.Errorf("list multipart uploads in %q: %w", bucket, err)
		}
		var uploads []string
		for _, u := range out.Uploads {
			uploads = append(uploads, aws.ToString(u.Key))
		}
		return uploads, nil
	case Azure:
		client, err := s.azureClient(bucket)
		if err != nil {
			return nil, err
		}
		all, err := azureNames(ctx, client, true)
		if err != nil {
			return nil, err
		}
		committed, err := azureNames(ctx, client, false)
		if err != nil {
			return nil, err
		}
		var uncommitted []string
		for _, name := range all {
			if !slices.Contains(committed, name) {
				uncommitted = append(uncommitted, name)
			}
		}
		return uncommitted, nil
	default:
		return nil, nil
	}
}

// azureNames lists the blob names of a container, with or without the blobs
// that only have uncommitted blocks.
func azureNames(ctx context.Context, client *container.Client, uncommitted bool) ([]string, error) {
	pager := client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Include: container.ListBlobsInclude{UncommittedBlobs: uncommitted},
	})
	var names []string
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list blobs: %w", err)
		}
		for _, item := range page.Segment.BlobItems {
			names = append(names, *item.Name)
		}
	}
	return names, nil
}

func (s Service) s3Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(MinIOUser, MinIOPassword, ""),
	})
}

func (s Service) gcsClient(ctx context.Context) (*storage.Client, error) {
	client, err := storage.NewClient(ctx, option.WithoutAuthentication(), option.WithEndpoint(s.Endpoint+"/storage/v1/"))
	if err != nil {
		return nil, fmt.Errorf("gcs client for %s: %w", s.Endpoint, err)
	}
	return client, nil
}

func (s Service) azureClient(containerName string) (*container.Client, error) {
	cred, err := azblob.NewSharedKeyCredential(AzuriteAccount, AzuriteKey)
	if err != nil {
		return nil, err
	}
	client, err := container.NewClientWithSharedKeyCredential(s.Endpoint+"/"+AzuriteAccount+"/"+containerName, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("azure client for %s: %w", s.Endpoint, err)
	}
	return client, nil
}
