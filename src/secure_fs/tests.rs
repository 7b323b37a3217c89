use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

fn private_tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn creates_private_directories_and_files() {
    let tmp = private_tmp();
    let dir = open_dir(&tmp.path().join("a/b"), true, Trust::default()).unwrap();
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let f = dir
        .open_file("log", OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_APPEND)
        .unwrap();
    let mode = f.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_symlink_on_the_way_or_at_the_file_is_refused_and_its_target_untouched() {
    let tmp = private_tmp();
    let target = tmp.path().join("precious");
    std::fs::write(&target, "root:x:0:0\n").unwrap();
    std::fs::create_dir(tmp.path().join("d")).unwrap();
    symlink(&target, tmp.path().join("d/log")).unwrap();
    let dir = open_dir(&tmp.path().join("d"), false, Trust::default()).unwrap();
    let err = dir
        .open_file("log", OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_TRUNC)
        .unwrap_err();
    assert!(matches!(err, UnsafePath::Symlink { .. }), "{err}");
    symlink(tmp.path().join("d"), tmp.path().join("link")).unwrap();
    let err = open_dir(&tmp.path().join("link/sub"), true, Trust::default()).unwrap_err();
    assert!(matches!(err, UnsafePath::Symlink { .. }), "{err}");
    assert!(!tmp.path().join("d/sub").exists());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "root:x:0:0\n");
}

#[test]
fn a_directory_others_may_write_is_refused() {
    let tmp = private_tmp();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = open_dir(&open.join("x"), true, Trust::default()).unwrap_err();
    assert!(matches!(err, UnsafePath::Writable { .. }), "{err}");
    // /tmp itself (root, sticky, 1777) is fine on the way, not as the final one.
    if std::fs::metadata("/tmp").is_ok_and(|m| m.permissions().mode() & 0o1777 == 0o1777) {
        let err = open_dir(Path::new("/tmp"), false, Trust::default()).unwrap_err();
        assert!(
            matches!(err, UnsafePath::Writable { .. } | UnsafePath::Owner { .. }),
            "{err}"
        );
    }
}

#[test]
fn a_file_others_may_write_is_refused_as_trusted_input() {
    let tmp = private_tmp();
    let f = tmp.path().join("policy.toml");
    std::fs::write(&f, "").unwrap();
    check_trusted_file(&f).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = check_trusted_file(&f).unwrap_err();
    assert!(matches!(err, UnsafePath::Writable { .. }), "{err}");
}
