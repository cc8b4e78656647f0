package snapstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
)

// openAzure opens an azblob:// bucket URL the way gocloud's azureblob URL
// opener does (the same query parameters and environment variables, the
// same choice of credentials: AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY,
// AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_CONNECTION_STRING, else
// azidentity's DefaultAzureCredential: environment, workload identity,
// managed identity, Azure CLI), except that the client retries up to
// sdkAttempts times with backoff up to sdkMaxBackoff. gocloud's opener
// keeps azcore's default of 3 retries over about 9 s, which a block of a
// streaming upload, which cannot start over, does not survive a server
// restart with; its URL opener offers no way to change that.
func openAzure(ctx context.Context, raw string) (*blob.Bucket, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	defaults := azureblob.NewDefaultServiceURLOptions()
	if defaults.SASToken != "" && len(u.Query()) > 0 {
		// The SAS token is part of the service URL: URL parameters must
		// not send it to another origin (as gocloud's opener checks).
		for _, p := range []string{"domain", "protocol", "cdn", "localemu", "storage_account"} {
			if u.Query().Has(p) {
				return nil, errors.New("azureblob: bucket URL cannot change the service endpoint when AZURE_STORAGE_SAS_TOKEN is set: use the AZURE_STORAGE_* environment variables instead")
			}
		}
	}
	opener := &azureblob.URLOpener{MakeClient: newAzureClient, ServiceURLOptions: *defaults}
	return opener.OpenBucketURL(ctx, u)
}

// newAzureClient makes the container client with credentials from the
// environment, as gocloud's default opener does.
func newAzureClient(svcURL azureblob.ServiceURL, containerName azureblob.ContainerName) (*container.Client, error) {
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Telemetry: policy.TelemetryOptions{ApplicationID: "etcdbr"},
		Retry: policy.RetryOptions{
			MaxRetries:    sdkAttempts - 1,
			RetryDelay:    sdkInitialBackoff,
			MaxRetryDelay: sdkMaxBackoff,
		},
	}}
	containerURL, err := url.JoinPath(string(svcURL), string(containerName))
	if err != nil {
		return nil, err
	}
	account, key := os.Getenv("AZURE_STORAGE_ACCOUNT"), os.Getenv("AZURE_STORAGE_KEY")
	connection := os.Getenv("AZURE_STORAGE_CONNECTION_STRING")
	if connection == "" {
		connection = os.Getenv("AZURE_STORAGEBLOB_CONNECTIONSTRING")
	}
	switch {
	case account != "" && key != "":
		cred, err := azblob.NewSharedKeyCredential(account, key)
		if err != nil {
			return nil, fmt.Errorf("azure shared key of AZURE_STORAGE_ACCOUNT %q: %w", account, err)
		}
		return container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
	case os.Getenv("AZURE_STORAGE_SAS_TOKEN") != "":
		// The token is in svcURL's query.
		return container.NewClientWithNoCredential(containerURL, opts)
	case connection != "":
		return container.NewClientFromConnectionString(connection, string(containerName), opts)
	default:
		cred, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azure credentials: %w: set AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or "+
				"AZURE_STORAGE_CONNECTION_STRING, or use a managed or workload identity", err)
		}
		return container.NewClient(strings.TrimSuffix(containerURL, "/"), cred, opts)
	}
}
