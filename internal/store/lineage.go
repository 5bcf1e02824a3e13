package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// Lineage is where a derived image came from: its parent, how it was made
// ("build" or "promote"), the provisioning scripts with their digests, the
// build log, and the fingerprint of the host key the build VM was pinned to.
type Lineage struct {
	ImageID, ParentID, ParentName, Source, BuildLog, HostKeyFingerprint string
	Scripts                                                             []ScriptDigest
}

// ScriptDigest is one provisioning script an image was built with.
type ScriptDigest struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// CreateDerivedImage inserts im and its lineage in one transaction, so an
// image is never registered without the record of where it came from.
// im.ID and im.CreatedAt are generated when empty, as CreateImage does.
func (s *Store) CreateDerivedImage(ctx context.Context, im *Image, l Lineage) error {
	if im.Name == "" {
		return api.Errorf(api.KindInvalidName, "image name is empty")
	}
	rec := *im
	if rec.ID == "" {
		rec.ID = NewID()
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.nowUTC()
	}
	scripts, err := json.Marshal(nonNilScripts(l.Scripts))
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create image %q: %w", rec.Name, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO images (`+imageColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, rec.args()...); err != nil {
		return s.imageWriteError("create", &rec, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO image_lineage
		(image_id, parent_id, parent_name, source, scripts, build_log, host_key_fingerprint)
		VALUES (?,?,?,?,?,?,?)`, rec.ID, l.ParentID, l.ParentName, l.Source, string(scripts), l.BuildLog,
		l.HostKeyFingerprint); err != nil {
		return fmt.Errorf("record lineage of image %q: %w", rec.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create image %q: %w", rec.Name, err)
	}
	*im = rec
	return nil
}

func nonNilScripts(s []ScriptDigest) []ScriptDigest {
	if s == nil {
		return []ScriptDigest{}
	}
	return s
}

// ImageLineage returns the lineage of image id; an image that was not
// derived from another (registered, recipe-built) has none: ErrNotFound.
func (s *Store) ImageLineage(ctx context.Context, id string) (Lineage, error) {
	var l Lineage
	var scripts string
	err := s.db.QueryRowContext(ctx, `SELECT image_id, parent_id, parent_name, source, scripts, build_log,
		host_key_fingerprint FROM image_lineage WHERE image_id = ?`, id).
		Scan(&l.ImageID, &l.ParentID, &l.ParentName, &l.Source, &scripts, &l.BuildLog, &l.HostKeyFingerprint)
	if errors.Is(err, sql.ErrNoRows) {
		return Lineage{}, notFound("image lineage", id)
	}
	if err != nil {
		return Lineage{}, fmt.Errorf("lineage of image %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(scripts), &l.Scripts); err != nil {
		return Lineage{}, fmt.Errorf("lineage of image %s: corrupt script list: %w", id, err)
	}
	return l, nil
}

// ImageChildren returns the names of the images derived from image id, sorted.
func (s *Store) ImageChildren(ctx context.Context, id string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT i.name FROM image_lineage l JOIN images i ON i.id = l.image_id
		WHERE l.parent_id = ? ORDER BY i.name`, id)
	if err != nil {
		return nil, fmt.Errorf("children of image %s: %w", id, err)
	}
	defer rows.Close()
	names := []string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("children of image %s: %w", id, err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// BuildVM marks a VM as the transient VM of an image build.
type BuildVM struct {
	VMID, ImageID, ImageName string
	CreatedAt                time.Time
}

// AddBuildVM records that VM vmID builds image imageID (not yet registered).
// The mark goes away with the VM's row.
func (s *Store) AddBuildVM(ctx context.Context, b BuildVM) error {
	if b.CreatedAt.IsZero() {
		b.CreatedAt = s.nowUTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO build_vms(vm_id, image_id, image_name, created_at) VALUES (?,?,?,?)`,
		b.VMID, b.ImageID, b.ImageName, toNanos(b.CreatedAt))
	if isForeignKeyViolation(err) {
		return notFound("vm", b.VMID)
	}
	if err != nil {
		return fmt.Errorf("mark VM %s as a build VM: %w", b.VMID, err)
	}
	return nil
}

// ListBuildVMs returns every VM marked as a build VM, keyed by VM id.
func (s *Store) ListBuildVMs(ctx context.Context) (map[string]BuildVM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT vm_id, image_id, image_name, created_at FROM build_vms`)
	if err != nil {
		return nil, fmt.Errorf("list build VMs: %w", err)
	}
	defer rows.Close()
	out := map[string]BuildVM{}
	for rows.Next() {
		var b BuildVM
		var created int64
		if err := rows.Scan(&b.VMID, &b.ImageID, &b.ImageName, &created); err != nil {
			return nil, fmt.Errorf("list build VMs: %w", err)
		}
		b.CreatedAt = fromNanos(created)
		out[b.VMID] = b
	}
	return out, rows.Err()
}

// ImagesReferencing returns the images other than exceptID whose kernel,
// vmlinux, initrd, root filesystem or work seed is one of paths.
func (s *Store) ImagesReferencing(ctx context.Context, exceptID string, paths []string) ([]Image, error) {
	want := map[string]bool{}
	for _, p := range paths {
		if p != "" {
			want[p] = true
		}
	}
	all, err := s.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, im := range all {
		if im.ID == exceptID {
			continue
		}
		for _, p := range []string{im.Kernel, im.KernelRaw, im.Initrd, im.RootFS, im.WorkSeed} {
			if want[p] {
				out = append(out, im)
				break
			}
		}
	}
	return out, nil
}
