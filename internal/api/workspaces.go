package api

import "time"

// Workspaces: a host git repository copied into a guest, and the work done
// there brought back as a branch. Host-side git runs in the CLI, as the
// invoking user; the daemon moves archives between host files and the
// guest. Archive and bundle paths are host paths the daemon can read or
// write (the CLI creates them in a private temp dir).
const (
	MethodWorkspacePush   = "workspace.push"
	MethodWorkspaceExport = "workspace.export"
	MethodWorkspaceStatus = "workspace.status"
)

// WorkspacePushParams imports a prepared archive into the guest.
type WorkspacePushParams struct {
	VM string `json:"vm"`
	// ArchivePath is a tar archive of the prepared repository copy.
	ArchivePath string `json:"archive_path"`
	// GuestPath is where the repository goes (default ~/work/<repo name>).
	GuestPath  string `json:"guest_path,omitempty"`
	RepoName   string `json:"repo_name"`
	HostRepo   string `json:"host_repo"`
	BaseCommit string `json:"base_commit"`
	Branch     string `json:"branch,omitempty"`
	GitName    string `json:"git_name,omitempty"`
	GitEmail   string `json:"git_email,omitempty"`
	SizeBytes  int64  `json:"size_bytes"`
}

// WorkspaceExportParams finalizes the guest workspace and writes a git
// bundle of the commits since the base to BundlePath.
type WorkspaceExportParams struct {
	VM         string `json:"vm"`
	BundlePath string `json:"bundle_path"`
	Message    string `json:"message,omitempty"`
	// Target says what the CLI makes of the bundle (a branch name or a
	// patch file); the daemon records it for workspace status.
	Target string `json:"target,omitempty"`
}

type WorkspaceExportResult struct {
	BaseCommit string   `json:"base_commit"`
	HeadCommit string   `json:"head_commit"`
	Commits    int      `json:"commits"`
	Files      []string `json:"files"`
	BundlePath string   `json:"bundle_path"`
}

type WorkspaceStatus struct {
	VM         string    `json:"vm"`
	GuestPath  string    `json:"guest_path"`
	HostRepo   string    `json:"host_repo"`
	BaseCommit string    `json:"base_commit"`
	Branch     string    `json:"branch,omitempty"`
	PushedAt   time.Time `json:"pushed_at"`
	GuestHead  string    `json:"guest_head,omitempty"`
	Commits    int       `json:"commits"`
	Changed    []string  `json:"changed"`
	LastExport time.Time `json:"last_export,omitzero"`
	ExportedTo string    `json:"exported_to,omitempty"`
	GuestError string    `json:"guest_error,omitempty"`
}
