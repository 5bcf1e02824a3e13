package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// Image is a registered or built guest image.
type Image struct {
	ID, Name, Kernel, KernelRaw, Initrd, RootFS, WorkSeed, KernelArgs, Recipe, Description string

	SizeBytes int64
	Managed   bool
	// Dir is the store-owned directory holding the files, "" when the image
	// references files in place.
	Dir       string
	CreatedAt time.Time
}

const imageColumns = `id, name, kernel, kernel_raw, initrd, rootfs, work_seed, kernel_args,
	recipe, description, size_bytes, managed, dir, created_at`

func scanImage(sc scanner) (Image, error) {
	var im Image
	var created int64
	err := sc.Scan(&im.ID, &im.Name, &im.Kernel, &im.KernelRaw, &im.Initrd, &im.RootFS, &im.WorkSeed,
		&im.KernelArgs, &im.Recipe, &im.Description, &im.SizeBytes, &im.Managed, &im.Dir, &created)
	im.CreatedAt = fromNanos(created)
	return im, err
}

func (im *Image) args() []any {
	return []any{im.ID, im.Name, im.Kernel, im.KernelRaw, im.Initrd, im.RootFS, im.WorkSeed,
		im.KernelArgs, im.Recipe, im.Description, im.SizeBytes, im.Managed, im.Dir, toNanos(im.CreatedAt)}
}

func (s *Store) imageWriteError(verb string, im *Image, err error) error {
	if isUniqueViolation(err) {
		if strings.Contains(err.Error(), "images.name") {
			return conflict("an image named %q already exists", im.Name)
		}
		return conflict("an image with id %q already exists", im.ID)
	}
	return fmt.Errorf("%s image %q: %w", verb, im.Name, err)
}

// CreateImage inserts im, generating an ID and CreatedAt when empty (written
// back into im). A duplicate name or ID is ErrConflict.
func (s *Store) CreateImage(ctx context.Context, im *Image) error {
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
	_, err := s.db.ExecContext(ctx, `INSERT INTO images (`+imageColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, rec.args()...)
	if err != nil {
		return s.imageWriteError("create", &rec, err)
	}
	*im = rec
	return nil
}

// GetImage returns the image with exactly this ID.
func (s *Store) GetImage(ctx context.Context, id string) (Image, error) {
	im, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageColumns+` FROM images WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, notFound("image", id)
	}
	if err != nil {
		return Image{}, fmt.Errorf("get image %s: %w", id, err)
	}
	return im, nil
}

// FindImage resolves ref like FindVM: exact name, exact ID, unique ID prefix.
func (s *Store) FindImage(ctx context.Context, ref string) (Image, error) {
	id, err := s.resolveID(ctx, "images", "image", ref, true)
	if err != nil {
		return Image{}, err
	}
	return s.GetImage(ctx, id)
}

// ListImages returns all images ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	images := []Image{}
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		images = append(images, im)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return images, nil
}

// UpdateImage overwrites every column of the image with im.ID.
func (s *Store) UpdateImage(ctx context.Context, im *Image) error {
	if im.Name == "" {
		return api.Errorf(api.KindInvalidName, "image name is empty")
	}
	res, err := s.db.ExecContext(ctx, `UPDATE images SET
		name = ?2, kernel = ?3, kernel_raw = ?4, initrd = ?5, rootfs = ?6, work_seed = ?7,
		kernel_args = ?8, recipe = ?9, description = ?10, size_bytes = ?11, managed = ?12,
		dir = ?13, created_at = ?14
		WHERE id = ?1`, im.args()...)
	if err != nil {
		return s.imageWriteError("update", im, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update image %q: %w", im.Name, err)
	} else if n == 0 {
		return notFound("image", im.ID)
	}
	return nil
}

// DeleteImage removes image id. While a VM references it the delete is
// refused with ErrInUse naming those VMs.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
	if isForeignKeyViolation(err) {
		users, uerr := s.ImageUsers(ctx, id)
		if uerr != nil {
			return fmt.Errorf("delete image %s: it is in use, and listing its users failed: %w", id, uerr)
		}
		return newError(ErrInUse, api.Errorf(api.KindBusy,
			"image %s is used by %d vm(s): %s", id, len(users), strings.Join(users, ", ")).
			WithHint("delete those VMs first"))
	}
	if err != nil {
		return fmt.Errorf("delete image %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete image %s: %w", id, err)
	} else if n == 0 {
		return notFound("image", id)
	}
	return nil
}

// ImageUsers returns the names of the VMs that use image imageID, sorted.
func (s *Store) ImageUsers(ctx context.Context, imageID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM vms WHERE image_id = ? ORDER BY name`, imageID)
	if err != nil {
		return nil, fmt.Errorf("list users of image %s: %w", imageID, err)
	}
	defer rows.Close()
	names := []string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list users of image %s: %w", imageID, err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
