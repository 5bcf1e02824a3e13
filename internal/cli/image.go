package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
)

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Register, build and manage images"}
	cmd.AddCommand(a.imageListCmd(), a.imageShowCmd(), a.imageRegisterCmd(), a.imageRmCmd(), a.imageBuildCmd(),
		a.imagePromoteCmd())
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
					onDisk := ""
					if im.DiskBytes > 0 {
						onDisk = humanBytes(im.DiskBytes)
					}
					for _, kv := range [][2]string{{"Name", im.Name}, {"ID", im.ID}, {"Parent", im.Parent},
						{"Children", strings.Join(im.Children, ", ")}, {"Kernel", im.Kernel},
						{"Vmlinux", im.KernelRaw}, {"Initrd", im.Initrd}, {"Rootfs", im.RootFS}, {"Work seed", im.WorkSeed},
						{"Args", im.KernelArgs}, {"Size", humanBytes(im.SizeBytes)}, {"On disk", onDisk},
						{"Managed", yesNo(im.Managed)}, {"Recipe", im.Recipe},
						{"Built with", im.HostKeyFingerprint}, {"Created", im.CreatedAt.Local().Format(time.RFC3339)},
						{"Used by", strings.Join(im.UsedBy, ", ")}, {"About", im.Description}} {
						if kv[1] != "" {
							if kv[0] == "Built with" {
								kv[1] = "build VM host key " + kv[1] + " (images carry no host keys)"
							}
							fmt.Fprintf(w, "%-11s %s\n", kv[0]+":", kv[1])
						}
					}
					for i, sc := range im.Scripts {
						label := ""
						if i == 0 {
							label = "Scripts:"
						}
						fmt.Fprintf(w, "%-11s %s sha256:%s\n", label, sc.Name, sc.SHA256)
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
	var scripts, files []string
	cmd := &cobra.Command{
		Use:   "build [NAME] [--from IMAGE --provision script.sh ... --file src:dst ... --size MiB]",
		Short: "Build an image: the default Debian one, or one derived from another image",
		Long: `Without --from: build a Debian bookworm image from Debian packages
(debootstrap root filesystem, Debian's cloud kernel with an initramfs for
virtio, and banger's guest units). Takes a few minutes the first time;
later builds of the same recipe are instant.

With --from IMAGE: boot a transient build VM from IMAGE, copy the --file
files in, run the --provision scripts in order as root (their output goes
to the operation's log), shut it down, and flatten its disk into a new
image shrunk to its content plus headroom (or to --size MiB). The build
VM's home directory becomes the new image's work seed. SSH host keys are
removed from the result.

Ctrl-C (or banger op cancel) cancels and removes the build VM and
partial files.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = "default"
			if len(args) == 1 {
				p.Name = args[0]
			}
			if p.From == "" && (len(scripts) > 0 || len(files) > 0 || p.SizeMiB != 0) {
				return usageErr("--provision, --file and --size need --from IMAGE")
			}
			if p.From != "" && len(args) == 0 {
				return usageErr("banger image build NAME --from IMAGE: name the new image")
			}
			for _, path := range scripts {
				content, err := os.ReadFile(path)
				if err != nil {
					return usageErr("provisioning script: %v", err)
				}
				p.Provision = append(p.Provision, api.ProvisionScript{Name: filepath.Base(path), Content: string(content)})
			}
			for _, spec := range files {
				fc, err := parseFileCopy(spec)
				if err != nil {
					return err
				}
				p.Files = append(p.Files, fc)
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
	cmd.Flags().StringVar(&p.From, "from", "", "build on this image through a transient build VM")
	cmd.Flags().StringArrayVar(&scripts, "provision", nil, "script to run as root in the build VM (repeatable, in order)")
	cmd.Flags().StringArrayVar(&files, "file", nil, "host file to copy into the build VM, as SRC:DST (repeatable)")
	cmd.Flags().IntVar(&p.SizeMiB, "size", 0, "root filesystem size of the result in MiB (default: content plus headroom)")
	return cmd
}

// parseFileCopy parses --file SRC:DST. SRC is made absolute (the daemon
// has another working directory); traversal is left for it to refuse.
func parseFileCopy(spec string) (api.FileCopy, error) {
	i := strings.LastIndex(spec, ":")
	if i <= 0 || i == len(spec)-1 {
		return api.FileCopy{}, usageErr("--file %q: want SRC:DST (DST an absolute path in the guest)", spec)
	}
	src, dst := spec[:i], spec[i+1:]
	if _, err := os.Lstat(src); err != nil {
		return api.FileCopy{}, usageErr("--file %q: %v", spec, err)
	}
	if !filepath.IsAbs(src) && !strings.Contains(src, "..") {
		if abs, err := filepath.Abs(src); err == nil {
			src = abs
		}
	}
	return api.FileCopy{Src: src, Dst: dst}, nil
}

func (a *app) imagePromoteCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "promote VM NAME",
		Short: "Turn a stopped VM's system disk into a new image",
		Long: `Flatten a stopped VM's system disk into a new image named NAME, shrunk
to its content plus headroom, with SSH host keys removed. The VM's work
disk (its home directory) is not copied: the image keeps its parent's
work seed. Promoting the same disk twice stores its content once.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				op, err := c.ImagePromote(ctx, api.ImagePromoteParams{VM: args[0], Name: args[1]})
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
				return a.emit(final, func(w io.Writer) { fmt.Fprintf(w, "image %s ready\n", args[1]) })
			})
		},
	}
	cmd.Flags().BoolVar(&detach, "detach", false, "print the operation id and return")
	return cmd
}
