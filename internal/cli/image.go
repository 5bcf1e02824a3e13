package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
)

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Register, build and manage images"}
	cmd.AddCommand(a.imageListCmd(), a.imageShowCmd(), a.imageRegisterCmd(), a.imageRmCmd(), a.imageBuildCmd())
	return cmd
}

func (a *app) imageListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.ImageList(ctx)
				if err != nil {
					return err
				}
				return a.emit(res, func(w io.Writer) {
					rows := make([][]string, 0, len(res.Images))
					for _, im := range res.Images {
						rows = append(rows, []string{im.Name, im.ID[:min(12, len(im.ID))], humanBytes(im.SizeBytes),
							fmt.Sprint(len(im.UsedBy)), yesNo(im.Managed), im.CreatedAt.Local().Format("2006-01-02 15:04")})
					}
					table(w, []string{"NAME", "ID", "SIZE", "VMS", "MANAGED", "CREATED"}, rows)
				})
			})
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (a *app) imageShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show IMAGE", Short: "Show one image", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				im, err := c.ImageShow(ctx, api.ImageRef{Image: args[0]})
				if err != nil {
					return err
				}
				return a.emit(im, func(w io.Writer) {
					for _, kv := range [][2]string{{"Name", im.Name}, {"ID", im.ID}, {"Kernel", im.Kernel},
						{"Vmlinux", im.KernelRaw}, {"Initrd", im.Initrd}, {"Rootfs", im.RootFS}, {"Work seed", im.WorkSeed},
						{"Args", im.KernelArgs}, {"Size", humanBytes(im.SizeBytes)}, {"Managed", yesNo(im.Managed)},
						{"Recipe", im.Recipe}, {"Created", im.CreatedAt.Local().Format(time.RFC3339)},
						{"Used by", strings.Join(im.UsedBy, ", ")}, {"About", im.Description}} {
						if kv[1] != "" {
							fmt.Fprintf(w, "%-10s %s\n", kv[0]+":", kv[1])
						}
					}
				})
			})
		},
	}
}

func (a *app) imageRegisterCmd() *cobra.Command {
	var p api.ImageRegisterParams
	cmd := &cobra.Command{
		Use:   "register NAME --kernel FILE --rootfs FILE [--initrd FILE]",
		Short: "Register an image from existing files",
		Long: `Register kernel, initrd and root filesystem files as an image. Files must be
regular files (not symlinks); paths with '..' are refused. With --copy
the files are copied into the daemon's state directory.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			// The daemon has another working directory: send absolute paths,
			// but leave traversal for the daemon to refuse.
			for _, f := range []*string{&p.Kernel, &p.KernelRaw, &p.Initrd, &p.RootFS, &p.WorkSeed} {
				if *f != "" && !filepath.IsAbs(*f) && !strings.Contains(*f, "..") {
					abs, err := filepath.Abs(*f)
					if err == nil {
						*f = abs
					}
				}
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				im, err := c.ImageRegister(ctx, p)
				if err != nil {
					return err
				}
				return a.emit(im, func(w io.Writer) { fmt.Fprintf(w, "registered %s (%s)\n", im.Name, im.ID) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Kernel, "kernel", "", "kernel (bzImage) for QEMU")
	f.StringVar(&p.KernelRaw, "vmlinux", "", "uncompressed vmlinux for Firecracker")
	f.StringVar(&p.Initrd, "initrd", "", "initramfs")
	f.StringVar(&p.RootFS, "rootfs", "", "root filesystem image (raw ext4)")
	f.StringVar(&p.WorkSeed, "work-seed", "", "work disk seed (ext4 image labelled banger-work)")
	f.StringVar(&p.KernelArgs, "args", "", "kernel command line")
	f.BoolVar(&p.Copy, "copy", false, "copy the files into the state directory")
	return cmd
}

func (a *app) imageRmCmd() *cobra.Command {
	return &cobra.Command{
		Use: "rm IMAGE", Aliases: []string{"delete"}, Short: "Delete an image (refused while a VM uses it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.ImageDelete(ctx, api.ImageRef{Image: args[0]}); err != nil {
					return err
				}
				return a.emit(map[string]string{"deleted": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "deleted %s\n", args[0]) })
			})
		},
	}
}

func (a *app) imageBuildCmd() *cobra.Command {
	var p api.ImageBuildParams
	var detach bool
	cmd := &cobra.Command{
		Use:   "build [NAME]",
		Short: "Build the default Debian image (asynchronous; cached by recipe)",
		Long: `Build a Debian bookworm image from Debian packages: debootstrap root
filesystem, Debian's cloud kernel with an initramfs for virtio, and banger's
guest units. Takes a few minutes the first time; later builds of the same
recipe are instant. Ctrl-C cancels and removes partial files.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = "default"
			if len(args) == 1 {
				p.Name = args[0]
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				op, err := c.ImageBuild(ctx, p)
				if err != nil {
					return err
				}
				if detach {
					return a.emit(op, func(w io.Writer) { fmt.Fprintln(w, op.ID) })
				}
				final, err := a.follow(ctx, c, op)
				if err != nil {
					return err
				}
				return a.emit(final, func(w io.Writer) {
					cached := ""
					if b, _ := final.Result["cached"].(bool); b {
						cached = " (cached)"
					}
					fmt.Fprintf(w, "image %s ready%s\n", p.Name, cached)
				})
			})
		},
	}
	cmd.Flags().StringVar(&p.Recipe, "recipe", "", "recipe (default: default)")
	cmd.Flags().BoolVar(&p.Force, "force", false, "rebuild even when the recipe is cached")
	cmd.Flags().BoolVar(&detach, "detach", false, "print the operation id and return")
	return cmd
}
